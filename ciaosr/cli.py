"""What the command lines share: scale arguments, model names (--model / --name), device, precision, the
memory budget (parsed, and checked against the device), the output folder's check, console set-up and the exit
statuses.

The upscaler, the benchmark, the quality report and the web app name methods, pick devices and check
precisions the same way through these helpers; the upscaler and the web app warn about a memory budget above
the device's memory with `memory_warning`.
"""
import argparse
import contextlib
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

import ciaosr_arch.runtime as runtimes
from ciaosr_arch import emulation
from ciaosr_arch.engine import MIN_TILE
from ciaosr_arch.errors import byte_size
from ciaosr_arch.evaluation import as_scale
from ciaosr_arch.shipped import SHIPPED_MODELS

from . import pipeline
from .pipeline import CLI_NAMES, device_memory
from .scripts import route_sigterm

BICUBIC = 'bicubic'  # the baseline's name in every table
SCALE_MARKS = 'xX×'  # what may precede or follow a scale on a command line: x4, 4x, ×4


class OneLineParser(argparse.ArgumentParser):
    """The command lines' parser: argparse, but a command line that cannot be used is one line, `error: ... (see
    --help)`, exit status 2 (stock argparse prints its usage block before the error)."""

    def error(self, message):
        self.exit(2, f'error: {message} (see --help)\n')


class UsageError(Exception):
    """A command line that cannot be used as given, found before any work: an option's value, options that do not
    fit together, or what they ask of this machine (no CUDA, no native bf16): one line, exit status 2."""


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Ends the console script in the block on an error with one line on stderr, `error: ...` (no traceback), and
    the exit status of every console script: 2 for a command line that cannot be used (UsageError, as argparse's
    own errors), 1 for an input, a checkpoint or an output that cannot be used (ValueError, which CheckpointError,
    UpscalerError and ImageReadError are, and OSError, which missing files and folders are). Other statuses: 0
    success, 130 interrupted (Ctrl-C, SIGTERM)."""
    try:
        yield
    except UsageError as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(2)
    except (ValueError, OSError) as err:
        sys.exit(f'error: {err}')  # Python prints it; exit status 1


def console_script_setup() -> None:
    """What every console script's main() sets up first, so that it holds for the installed script, `python -m`
    and the scripts in inference/ alike (ValueError outside the main thread, where Python cannot set signal
    handlers):

    - SIGTERM (kill, torchrun, a service manager) raises KeyboardInterrupt in the main thread, as Ctrl-C does, so
      a command ends the same way on either: its summary, temporary files removed, exit 130;
    - sys.stdout writes what its encoding cannot hold as backslash escapes (as sys.stderr already does), so
      printing a file name never fails: names that are not UTF-8 (Latin-1 bytes from old zips and Samba shares
      arrive as surrogates), or a strict non-UTF-8 console.
    """
    route_sigterm()
    reconfigure = getattr(sys.stdout, 'reconfigure', None)  # a TextIOWrapper's, not an object put in its place
    if reconfigure:
        reconfigure(errors='backslashreplace')


def scale_number(text: str) -> float:
    """A scale typed on a command line: a number, alone or marked as the field and our reports write it ('4', '2.7',
    'x4', '4x', '×4'). ValueError (one line) for anything else; the number is not checked further."""
    number = text.strip()
    number = number[1:] if number[:1] in SCALE_MARKS else number[:-1] if number[-1:] in SCALE_MARKS else number
    try:
        return float(number)
    except ValueError:
        raise ValueError(f'a scale must be a number such as 4, 2.7 or x4, got {text!r}') from None


def scale_arg(text: str) -> float:
    """argparse type of a scale (`scale_number`) > 0, as `ciaosr_arch.evaluation.as_scale` returns it, its message the
    parser's error."""
    try:
        return as_scale(scale_number(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def upscale_arg(text: str) -> float:
    """argparse type of an upscaling factor (`scale_number`, > 1: `pipeline.check_scale`), its message the parser's
    error."""
    try:
        return pipeline.check_scale(scale_number(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def at_least(minimum: int) -> Callable[[str], int]:
    """argparse type of a whole number >= `minimum` (a count of pixels, images or threads)."""
    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f'expected a whole number >= {minimum}, got {text!r}')
        return value
    return whole_number


def tile_problem(tile: int, overlap: int | None, zero: str) -> str | None:
    """What is wrong with --tile and --tile-overlap (LR pixels; overlap None: the tool's default), or None: the tile
    is 0 (`zero` says what 0 means to the tool, e.g. 'automatic') or at least MIN_TILE, the overlap between 0 and half
    the tile (the tiles' step is the tile less the overlap)."""
    if tile != 0 and tile < MIN_TILE:
        return f'--tile must be 0 ({zero}) or at least {MIN_TILE} LR pixels, got {tile}'
    if overlap is not None and (overlap < 0 or (tile and 2 * overlap > tile)):
        return (f'--tile-overlap must be between 0 and half the tile (at most {tile // 2} for --tile {tile}), got '
                f'{overlap}' if tile else f'--tile-overlap must be >= 0, got {overlap}')
    return None


def add_model_options(parser: argparse.ArgumentParser, extra: str = '') -> None:
    """--model (repeatable: a shipped name, a checkpoint path`extra`) and --name (one per --model)."""
    parser.add_argument('--model', action='append',
                        help=f'a shipped model ({", ".join(SHIPPED_MODELS)}) or a checkpoint path{extra}; '
                             "repeatable; default: 'default'")
    parser.add_argument('--name', action='append', help='method name per --model (default: the shipped name or the '
                                                        'file stem)')


def model_specs(args: argparse.Namespace) -> dict[str, str]:
    """{method name: --model value} in order ('bicubic' left out: it is the baseline, always present).

    Names come from --name, else the shipped name or the file stem. UsageError (one line) when --name is not
    given once per model, or names repeat or take the baseline's name.
    """
    specs = [spec for spec in args.model or ['default'] if spec != BICUBIC]
    names = args.name or [spec if spec in SHIPPED_MODELS else Path(spec).stem for spec in specs]
    if len(names) != len(specs):
        raise UsageError(f'--name was given {len(names)} times for {len(specs)} models ({BICUBIC} needs no name)')
    if len(set(names)) != len(names) or BICUBIC in names:
        raise UsageError(f'method names must be unique and not {BICUBIC!r}: {names} (use --name)')
    return dict(zip(names, specs))


def add_device_options(parser: argparse.ArgumentParser, int8: bool = False) -> None:
    """--device auto|cpu|cuda, --threads N and the autocast precision --fp16 / --bf16 (mutually exclusive); with
    `int8`, also --int8 (the OpenVINO int8 decode, `ciaosr_arch.runtime`)."""
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'],
                        help='where to run (default auto: the GPU when CUDA has one, else the CPU)')
    parser.add_argument('--threads', type=at_least(1),
                        help='CPU threads of PyTorch and OpenVINO (default: PyTorch\'s, which is OMP_NUM_THREADS '
                             'if set (torchrun sets 1 per rank), else one per physical core)')
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument('--fp16', action='store_true', help='float16 autocast (CUDA only)')
    precision.add_argument('--bf16', action='store_true', help='bfloat16 autocast (CUDA, or CPUs with native bf16)')
    if int8:
        precision.add_argument('--int8', action='store_true',
                               help='fastest on CPUs with VNNI (AVX-512 VNNI or AVX-VNNI; refused on others, where '
                                    'it is slower than the default): the decode\'s key and value nets in int8 on '
                                    'OpenVINO, the rest in bf16 where the CPU has it (else fp32); PSNR against fp32 '
                                    'on photos 63-71 dB, 50-56 dB for the real model, whose trunk then runs in bf16 '
                                    '(README: Performance)')


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """torch.device for 'auto' | 'cpu' | 'cuda'; with CUDA, GPU number `local_rank`. UsageError if unavailable."""
    if choice == 'auto':
        choice = 'cuda' if torch.cuda.is_available() else 'cpu'
    if choice == 'cpu':
        return torch.device('cpu')
    if not torch.cuda.is_available():
        raise UsageError('--device cuda: no CUDA device is available')
    if local_rank >= torch.cuda.device_count():
        raise UsageError(f'local rank {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible)')
    torch.cuda.set_device(local_rank)
    return torch.device('cuda', local_rank)


def pick_precision(device: torch.device, fp16: bool = False, bf16: bool = False,
                   int8: bool = False) -> torch.dtype | None:
    """Autocast dtype of --fp16 / --bf16 / --int8 (at most one true) on `device` (None: float32; int8: bfloat16 where
    the CPU has it natively, else None); UsageError where it cannot run, and for int8 on a CPU where it is slower
    than the default path (`ciaosr_arch.runtime.int8_problem`)."""
    if fp16:
        if device.type != 'cuda':
            raise UsageError('--fp16 needs a CUDA device; on this CPU use '
                             + ('--bf16' if cpu_has_bf16() else 'float32 (no flag: it has no native bfloat16 either)'))
        return torch.float16
    if bf16:
        native = cuda_has_bf16(device) if device.type == 'cuda' else cpu_has_bf16()
        if not native:
            raise UsageError('--bf16: this device has no native bfloat16 support; run in float32')
        return torch.bfloat16
    if int8:
        if device.type != 'cpu':
            raise UsageError('--int8 runs on the CPU (OpenVINO): add --device cpu, or on CUDA use --fp16 or --bf16')
        problem = runtimes.int8_problem()
        if problem:
            raise UsageError(f'--int8: {problem}; run without it')
        return torch.bfloat16 if cpu_has_bf16() else None
    return None


def parse_bytes(text: str, name: str = CLI_NAMES.budget) -> int:
    """Bytes in '4GB', '2.5G', '512MiB', '3000000000' (K/M/G/T, decimal or binary: both taken as powers of 1024);
    ValueError (one line, naming the setting as `name`) for anything else."""
    match = re.fullmatch(r'\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*', text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f'{name} must be a size such as 4GB or 512MB, got {text!r}')
    return int(float(match[1]) * 1024 ** ' KMGT'.index(match[2].upper() or ' '))


def prepare_output(outdir: Path) -> None:
    """Create the output folder `outdir` (a Path) if needed and check that files can be written in it; OSError (one
    line naming the folder) otherwise."""
    if outdir.exists() and not outdir.is_dir():
        raise NotADirectoryError(f'the output folder {outdir} exists and is not a folder')
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        probe = outdir / f'.write-test.{secrets.token_hex(4)}.part'
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as err:
        raise OSError(f'cannot write to the output folder {outdir}: {err.strerror or err}') from None


def prepare_output_files(*paths: str | Path | None) -> None:
    """Check, before any work, that report files (`paths`; None: not asked for) can be written: each one's folder is
    created if needed and checked as `prepare_output` does, and an existing folder at a file's path is refused;
    OSError (one line naming the path) otherwise. A long run then never ends in a traceback over its report."""
    for path in paths:
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f'{path} is a folder; give a file name for the report')
        prepare_output(path.parent)


def memory_warning(budget: float, device: torch.device, name: str = CLI_NAMES.budget) -> str | None:
    """A one-line warning when a memory budget (bytes; `name`: what the user set it as) is more than `device` has,
    else None (also where that cannot be read): plans made for memory that is not there end in swapping or in the
    process being killed, not in a clear message."""
    total = device_memory(device)
    if not total or budget <= total:
        return None
    where = 'the GPU' if device.type == 'cuda' else 'this machine'
    return (f'warning: {name} {byte_size(budget)} is more than {where} has ({byte_size(total)}); '
            f'runs that need it will swap or be killed')


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 natively: AVX-512 BF16 or AMX (its kind, `ciaosr_arch.runtime.cpu_kind`, is
    'avx512-bf16'), as oneDNN sees it too (oneDNN alone counts plain AVX-512, where it emulates bf16, slowly)."""
    if runtimes.cpu_kind() != 'avx512-bf16':
        return False
    try:
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


def cuda_has_bf16(device: torch.device) -> bool:
    """Whether GPU `device` computes bfloat16 natively: ROCm GPUs, and CUDA GPUs of compute capability 8.0 (Ampere)
    or later. Older ones (V100, T4) only emulate it, slowly, which `torch.cuda.is_bf16_supported()` counts as support
    by default (and it asks the current GPU, not `device`)."""
    return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8


def cpu_path_line(runtime: str, dtype: torch.dtype | None, int8: bool = False) -> str:
    """The line naming the path a CPU run takes: the CPU's kind (marked when emulated: `ciaosr_arch.emulation`),
    PyTorch's threads, what decodes (`runtime`: 'torch' or 'openvino') and in which precision (autocast `dtype`,
    None for fp32; `int8`: the int8 decode)."""
    emulated = ' (emulated)' if emulation.emulated_kind() else ''
    return (f'CPU: {runtimes.CPU_KINDS[runtimes.cpu_kind()]}{emulated}, {torch.get_num_threads()} thread(s); '
            f'decode on {runtime} in {"int8 + " if int8 else ""}{"bf16" if dtype else "fp32"}')
