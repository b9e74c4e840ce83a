"""Loading CiaoSR/LIIF weights from official mmediting checkpoints, BasicSR checkpoints and safetensors: the load
story (`load_model`): read the file, refuse other networks, take or infer the arch options, check them, build the
network's skeleton, match it with the file, check the values, load.

Checkpoints are read with `torch.load(..., weights_only=True)` or safetensors: nothing in a file is
ever executed. Arch options are taken from the safetensors metadata when present, otherwise
inferred from key names and tensor shapes (official files store no config we could trust).

Nothing in a file decides how much memory we allocate: the options are type- and range-checked,
the network is first built on the meta device (no storage, `safe_build`) and compared key by key and shape by
shape with the file's tensors, and only then built for real. Weights must be finite floats. How the options are
read off the keys is the archs' knowledge (`options_from_state` of the encoders, CiaoSR and LIIF); the shipped
models' names are resolved by `shipped`; files are written by `files`.
"""
import inspect
import json
import math
import os
import pickle
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file

from .archs import ARCHS, build_net
from .archs.encoders import ENCODERS, encoder_from_state
from .archs.implicit_base import ImplicitSRNet
from .errors import CheckpointError, byte_size, error_line, listing
from .safe_build import build_skeleton
from .shipped import SHIPPED_MODELS, resolve_weights

IGNORED_PREFIXES = ('discriminator.', 'perceptual_loss.', 'step_counter', 'net_d.')
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # weights load from any of these
# Other super-resolution networks people pass as --model, by keys that only their full network has (checked only
# in files without CiaoSR/LIIF head keys, imnet*): what the file is, and keys that must all be there. An RRDBNet is
# known by its upsampler, never by body.N.rdb* alone (an RRDB trunk can also be a CiaoSR encoder).
FOREIGN_NETWORKS = (
    ('a SwinIR (a whole super-resolution network)',
     ('layers.0.residual_group.blocks.0.attn.relative_position_bias_table', 'conv_after_body.weight')),
    ('an RRDBNet (ESRGAN / Real-ESRGAN)',
     ('conv_body.weight', 'conv_up1.weight', 'conv_hr.weight', 'conv_last.weight')),
    ('an SRVGGNetCompact (Real-ESRGAN compact / realesr-general)', ('body.0.weight', 'body.1.weight')),
    ('an RCAN (a whole super-resolution network)', ('body.0.residual_group.0.rcab.0.weight',)),  # BasicSR
    ('an RCAN (a whole super-resolution network)', ('body.0.body.0.body.3.conv_du.0.weight',)),  # official
    ('an EDSR (a whole super-resolution network)', ('head.0.weight', 'tail.0.0.weight')),  # official
    ('an EDSR (a whole super-resolution network)', ('body.0.conv1.weight', 'upsample.0.weight', 'conv_last.weight')),
)
MAX_OPTION = 2 ** 16  # largest integer option (channels, widths, block counts, sizes) a checkpoint may declare
MAX_LIST = 64  # longest list option (hidden widths, SwinIR stages) a checkpoint may declare
MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header (bytes)
PYTORCH_MAGIC = (b'PK\x03\x04', b'\x80')  # how torch.save files start: a zip archive, or a pickle (protocol >= 2)


def read_checkpoint(path: str | Path, param_key: str | None = None,
                    partial: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Generator state_dict {key: tensor} and arch metadata (dict or None) of a .pth/.safetensors file.

    With `partial=True` the file may hold only part of a network, such as Real-ESRGAN's trunk in its own file
    (`train.freeze_encoder` recipes): a safetensors file's metadata is not read (None is returned) and the whole of
    another super-resolution network is not refused (`refuse_foreign`).
    The file's first bytes pick the reader, whatever its suffix: safetensors (`is_safetensors`), else torch.load
    for what starts as a torch.save file does (PYTORCH_MAGIC); anything else is refused. `param_key` (e.g.
    'params_ema') selects that entry of a BasicSR checkpoint when it has one. Raises CheckpointError for a missing
    or unreadable file (or a folder, a fifo), metadata 'arch' that is not a JSON object, tensors that declare more
    data than the file stores (`refuse_repeated_data`), and for the weights of another super-resolution network
    (`refuse_foreign`); the arch options are checked by `check_arch`, the tensors by `match_state`/`check_values`.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode  # (a fifo is refused before it is opened: opening one waits for a writer)
        if stat.S_ISREG(mode):
            with open(path, 'rb') as file:
                head = file.read(16)
    except FileNotFoundError:
        raise CheckpointError(f'checkpoint not found: {path} (a checkpoint file, or the name of a shipped model: '
                              f'{", ".join(SHIPPED_MODELS)})') from None
    except (OSError, ValueError) as err:  # permissions, a folder on the way that cannot be searched, a disk error; a
        # NUL in the path
        raise CheckpointError(f'{path}: cannot be read ({getattr(err, "strerror", None) or err})') from None
    if stat.S_ISDIR(mode):
        raise CheckpointError(f'{path} is a folder: give a checkpoint file in it, or the name of a shipped model: '
                              f'{", ".join(SHIPPED_MODELS)}')
    if not stat.S_ISREG(mode):
        raise CheckpointError(f'{path} is not a regular file (a fifo, a socket or a device): give a checkpoint file')
    if is_safetensors(head):
        state, meta = read_safetensors(path)
        if not partial:
            refuse_foreign(state, path)
        return state, None if partial else parse_arch_metadata(meta.get('arch'), path)
    if not head:
        raise CheckpointError(f'{path}: cannot be loaded as plain weights: the file is empty')
    if not head.startswith(PYTORCH_MAGIC):
        raise CheckpointError(f'{path}: not a PyTorch (.pth) or safetensors file (it starts with {head[:8]!r})')
    try:
        with warnings.catch_warnings():  # (torch's notes on old pickle protocols and sparse tensors)
            warnings.simplefilter('ignore')
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:  # Python objects besides tensors (code, perhaps), or not a PyTorch file
        raise CheckpointError(f'{path}: cannot be loaded as plain weights: it holds Python objects besides tensors, '
                              'which could run code when loaded, or is not a PyTorch file at all; nothing in it was '
                              'run (only .safetensors files and .pth files of tensors are loaded)') from None
    except Exception as err:  # a truncated or damaged zip, ...
        raise CheckpointError(f'{path}: cannot be loaded as plain weights: {error_line(err, named=True)}') from None
    if param_key and isinstance(obj, dict) and isinstance(obj.get(param_key), dict):
        obj = obj[param_key]
    state = generator_state_dict(obj, path)
    refuse_repeated_data(state, path)
    if not partial:
        refuse_foreign(state, path)
    return state, None


def is_safetensors(head: bytes) -> bool:
    """Whether a file that starts with `head` (its first 16 bytes or fewer) is a safetensors file: an 8-byte
    little-endian header length, then the JSON header's '{' (the format's specification, huggingface/safetensors)."""
    return len(head) > 8 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') < MAX_SAFETENSORS_HEADER


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file: the header read by Python (so that the real reason of a failed read
    is told: the library reports every I/O error as a missing file), the tensors by the library from the file, or,
    for a file name that is not UTF-8 (which the library cannot open), from its bytes read into memory.
    CheckpointError (one line) when it cannot be read or parsed."""
    try:
        with open(path, 'rb') as file:
            length = int.from_bytes(file.read(8), 'little')
            meta = json.loads(file.read(length)).get('__metadata__') or {}
        try:
            name = os.fsencode(path).decode('utf-8')
        except UnicodeDecodeError:
            return load_safetensors(path.read_bytes()), meta
        return load_file(name), meta
    except OSError as err:
        raise CheckpointError(f'{path}: cannot be read ({err.strerror or err})') from None
    except (SafetensorError, ValueError, AttributeError) as err:  # (AttributeError: a header that is not an object)
        raise CheckpointError(f'{path}: not a readable safetensors file ({error_line(err)})') from None


def refuse_repeated_data(state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Raise CheckpointError naming `source` if its tensors hold more elements than the file stores: a tensor saved
    as an expanded view (stride 0: one value repeated to any shape), views that overlap in one storage, sparse or
    meta tensors. The network built for such a file would take memory the file never paid for (a 36 KB file
    declared 700 MB of weights, a review found)."""
    declared, stored = 0, {}
    for value in state.values():
        declared += value.numel() * value.element_size()
        if value.layout == torch.strided and not value.is_meta:
            storage = value.untyped_storage()
            stored[storage.data_ptr()] = storage.nbytes()
    if declared > sum(stored.values()):
        raise CheckpointError(f'{source}: its tensors declare {byte_size(declared)} of weights but the file stores '
                              f'{byte_size(sum(stored.values()))} (expanded, overlapping or sparse tensors); save '
                              'them with .contiguous()')


def refuse_foreign(state: Mapping[str, Any], source: str | Path) -> None:
    """Raise CheckpointError naming `source` if `state` ({key: tensor}) is the whole of another super-resolution
    network (FOREIGN_NETWORKS: RRDBNet, SRVGGNetCompact, SwinIR, RCAN, EDSR) rather than a CiaoSR/LIIF one."""
    if any(key.startswith('imnet') for key in state):
        return
    for what, keys in FOREIGN_NETWORKS:
        if all(key in state for key in keys):
            raise CheckpointError(f'{source}: this is {what} checkpoint, not a CiaoSR one; CiaoSR needs its own '
                                  f'weights: a shipped model ({", ".join(SHIPPED_MODELS)}) or a CiaoSR/LIIF '
                                  'checkpoint')


def parse_arch_metadata(text: str | None, source: str | Path) -> dict[str, Any] | None:
    """The safetensors metadata entry 'arch' (a JSON string, or None when absent) as a dict or None.

    Raises CheckpointError naming `source` when it is not JSON or not a JSON object.
    """
    if text is None:
        return None
    try:
        arch = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{source}: metadata 'arch' is not valid JSON ({err})") from None
    if not isinstance(arch, dict):
        raise CheckpointError(f"{source}: metadata 'arch' must be a JSON object, got {type(arch).__name__}")
    return arch


def generator_state_dict(obj: Any, source: str | Path = 'checkpoint') -> dict[str, torch.Tensor]:
    """Pick the generator weights out of a loaded checkpoint object.

    BasicSR: `params_ema`, else `params`. mmediting: `state_dict` with `generator_ema.` (preferred)
    or `generator.` keys; `module.` (DataParallel) prefixes are stripped, before or after those; GAN extras are
    dropped. CheckpointError for keys that are not strings, or no generator weights.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f'{source}: expected a dict of tensors, got {type(obj).__name__}')
    for key in ('params_ema', 'params', 'state_dict'):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    named = [key for key in obj if not isinstance(key, str)]
    if named:
        raise CheckpointError(f'{source}: not a state_dict: its keys must be names, got {named[0]!r} '
                              f'({type(named[0]).__name__})')
    state = {k.removeprefix('module.'): v for k, v in obj.items() if torch.is_tensor(v)}
    for prefix in ('generator_ema.', 'generator.'):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):].removeprefix('module.'): v for k, v in state.items() if k.startswith(prefix)}
            break
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    if not state:
        raise CheckpointError(f'{source}: no generator weights found')
    return state


def infer_arch(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """{'type': 'CiaoSR'|'LIIF', 'encoder': ..., 'encoder_opt': {...}, **head options} from a generator state_dict,
    read off its keys and shapes by the encoders' and the archs' `options_from_state`.

    Raises CheckpointError when no encoder's or no head's keys are there; LookupError, TypeError or ArithmeticError
    when they are there but incomplete or oddly shaped (`load_model` words both for the file).
    """
    found = encoder_from_state(state)
    if found is None:
        raise CheckpointError('not a CiaoSR or LIIF checkpoint: no encoder found (EDSR body.*, RDN sfe1.*, SwinIR '
                              'patch_embed.* or RRDB body.*.rdb1.* keys)')
    encoder, encoder_opt = found
    channels = encoder_opt.get('num_feat', encoder_opt.get('embed_dim'))
    for kind, arch in ARCHS.items():
        options = arch.options_from_state(state, channels)
        if options is not None:
            return {'type': kind, 'encoder': encoder, 'encoder_opt': encoder_opt, **options}
    raise CheckpointError('not a CiaoSR or LIIF generator: no imnet_q/imnet_k or imnet keys')


def _is_size(value: object) -> bool:
    return type(value) is int and 1 <= value <= MAX_OPTION


def _option_problem(name: str, value: Any, default: Any) -> str | None:
    """Why `value` is refused for the constructor argument `name` whose default is `default`; None if it is fine."""
    if name == 'encoder':
        return None if isinstance(value, str) and value in ENCODERS else f'must be one of {", ".join(ENCODERS)}'
    if name == 'encoder_opt':
        return None if value is None or isinstance(value, dict) else 'must be an object'
    if isinstance(default, bool):
        return None if isinstance(value, bool) else 'must be true or false'
    if isinstance(default, int):
        return None if _is_size(value) else f'must be an integer in [1, {MAX_OPTION}]'
    if isinstance(default, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if name == 'drop_path_rate':
            return None if number and 0 <= value < 1 else 'must be a number in [0, 1)'
        return None if number and 0 < value <= MAX_OPTION else f'must be a finite number in (0, {MAX_OPTION}]'
    if isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and len(value) <= MAX_LIST and all(_is_size(v) for v in value)
        return None if ok else f'must be a list of at most {MAX_LIST} integers in [1, {MAX_OPTION}]'
    return 'cannot be set from a checkpoint'


def _check_options(options: Mapping[str, Any], constructor: Any, where: str) -> None:
    """Raise CheckpointError unless every option is an argument of `constructor` with an acceptable value."""
    params = inspect.signature(constructor).parameters
    for name, value in options.items():
        if name not in params:
            raise CheckpointError(f'{where}: unknown option {name!r}; known: {", ".join(params)}')
        problem = _option_problem(name, value, params[name].default)
        if problem:
            raise CheckpointError(f'{where}: option {name} = {value!r:.80} {problem}')


def check_arch(arch: Mapping[str, Any], source: str | Path) -> dict[str, Any]:
    """`arch` ({'type': 'CiaoSR'|'LIIF', **options}) with `encoder` made explicit, after checking every option.

    The rules follow the constructors' defaults: booleans must be booleans; integers (channels, widths,
    block counts, sizes) whole numbers in [1, MAX_OPTION]; floats finite and in (0, MAX_OPTION]
    (`drop_path_rate` in [0, 1)); tuples lists of at most MAX_LIST such integers; `encoder` one of
    ENCODERS and `encoder_opt` an object of that encoder's options, checked the same way. Raises
    CheckpointError naming `source` and the first refused option (unknown type or option, wrong type,
    negative or absurd size).
    """
    kind = arch.get('type')
    if not isinstance(kind, str) or kind not in ARCHS:
        raise CheckpointError(f'{source}: unknown arch type {kind!r:.80}; expected one of '
                              f'{", ".join(ARCHS)}')
    options = {k: v for k, v in arch.items() if k != 'type'}
    _check_options(options, ARCHS[kind], f'{source}: {kind}')
    encoder = options.setdefault('encoder', inspect.signature(ARCHS[kind]).parameters['encoder'].default)
    _check_options(options.get('encoder_opt') or {}, ENCODERS[encoder], f'{source}: {kind} encoder_opt ({encoder})')
    return {'type': kind, **options}


def match_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str | Path,
                network: str, strict: bool = True) -> None:
    """Raise CheckpointError unless `state` fits `expected` (a state_dict, possibly on the meta device) key by key
    (when `strict`) and shape by shape; the message names `source`, `network` and the missing, unexpected and
    wrongly shaped keys."""
    missing = [k for k in expected if k not in state] if strict else []
    unexpected = [k for k in state if k not in expected] if strict else []
    wrong_shape = [f'{k} {tuple(state[k].shape)} != {tuple(v.shape)}' for k, v in expected.items()
                   if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(f'{source} does not match {network}: missing keys: {listing(missing)}; '
                              f'unexpected keys: {listing(unexpected)}; wrong shapes: {listing(wrong_shape)}')


def check_values(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                 source: str | Path) -> None:
    """Raise CheckpointError naming every tensor of `state` that would load wrong into `expected` (a real state_dict).

    Where `expected` holds floats, the file must hold a dense float16/bfloat16/float32/float64 tensor whose values
    are all finite in the expected dtype (NaN or +-Inf weights give black images, and a float64 value beyond float32
    becomes +-Inf when loaded; integer or bool weights are not weights). Any other
    tensor (e.g. SwinIR's relative-position index, computed from the options) must equal the expected one, dtype
    included.
    """
    problems = []
    for key, value in state.items():
        want = expected.get(key)
        if want is None:
            continue
        if value.layout != torch.strided or value.is_meta:
            problems.append(f'{key} is not a dense tensor with data ({value.layout}, {value.device.type})')
        elif not want.is_floating_point():
            if value.dtype != want.dtype or not torch.equal(value, want.to(value.device)):  # `expected`: on a GPU too
                problems.append(f'{key} ({value.dtype}) differs from the {want.dtype} values its options imply')
        elif value.dtype not in FLOAT_DTYPES:
            problems.append(f'{key} is {str(value.dtype).removeprefix("torch.")}, not float16/bfloat16/float32/float64')
        elif not torch.isfinite(cast := value.to(want.dtype)).all():  # as loaded: 1e300 in float64 is +Inf in fp32
            counts = {'NaN': int(cast.isnan().sum()), '+Inf': int(cast.isposinf().sum()),
                      '-Inf': int(cast.isneginf().sum())}
            problems.append(f'{key} has non-finite values (' +
                            ', '.join(f'{n} {kind}' for kind, n in counts.items() if n) + f' of {value.numel()})')
    if problems:
        raise CheckpointError(f'{source}: unusable tensors: {listing(problems)}')


def load_model(path: str | Path | None = None, device: str | torch.device = 'cpu',
               **overrides: Any) -> ImplicitSRNet[Any]:
    """CiaoSR/LIIF network in eval mode from a checkpoint or a shipped model's name (default: 'default').

    `path`: a file, or one of SHIPPED_MODELS ('default', 'real-l1', 'real'); see `resolve_weights`.
    Accepts official mmediting checkpoints, BasicSR checkpoints and .safetensors; options not
    stored in the weights (e.g. `local_size`, `softmax_scale`) can be given as keyword arguments.
    The options (metadata or inferred, plus `overrides`) pass `check_arch`; the network is built on the
    meta device and matched with the file's keys and shapes before it is built for real, so a file
    never makes us allocate more than its own tensors; then the weights must pass `check_values`.
    Any failure is one CheckpointError naming the file and the keys, option or tensors at fault; a `device` that
    is not a device name, or is not there (CUDA without a GPU), a ValueError, before the file is read.
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N' (a torch.device), got {device!r}") from None
    if device.type not in ('cpu', 'cuda'):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N': the networks run there, got {str(device)!r}")
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: no CUDA device is available (use device='cpu')")
    if device.type == 'cuda' and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f'device {str(device)!r}: no such GPU ({torch.cuda.device_count()} visible, numbered from 0)')
    path = resolve_weights(path)
    state, arch = read_checkpoint(path)
    # Options read off the file's own keys declare the blocks and layers up to its largest index, so a file that
    # lacks some builds a skeleton a little larger than it: room for that, so that the match names what is missing.
    limit = len(state) if arch is not None else 2 * len(state)
    if arch is None:
        try:
            arch = infer_arch(state)
        except CheckpointError as err:
            raise CheckpointError(f'{path}: {err}') from None
        except (LookupError, TypeError, ArithmeticError) as err:
            raise CheckpointError(f'{path}: cannot infer the network from its keys ({type(err).__name__}: {err})') \
                from None
    arch = check_arch({**arch, **overrides}, path)
    network = f'{arch["type"]}({arch["encoder"]})'
    match_state(state, build_skeleton(arch, limit, path).state_dict(), path, network)
    net = build_net(arch)
    check_values(state, net.state_dict(), path)
    net.load_state_dict(state)
    net.arch = arch
    return net.eval().to(device)
