"""A narrower CPU emulated on this one, for tests and benchmarks: `emulation_env(kind)` is the environment that limits a
new process to the instruction sets of a CPU kind (`ciaosr_arch.runtime.CPU_KINDS`), and
`python -m ciaosr_arch.emulation KIND COMMAND [ARG ...]` runs a (Python) command under it.

Two layers:
- the libraries' own limits (EMULATION_ENV): PyTorch's kernels (ATEN_CPU_CAPABILITY), MKL (MKL_ENABLE_INSTRUCTIONS),
  oneDNN in PyTorch and in OpenVINO's CPU plugin (ONEDNN_MAX_CPU_ISA) and OpenVINO's own kernels (OV_CPU_MAX_ISA);
- CPUID masking (`cpuid_mask.c`, built with the C compiler into `cache_root()` on first use, loaded with LD_PRELOAD;
  Linux x86-64 with the cpuid_fault flag): code that picks its kernels from CPUID alone ignores those limits.
  OpenVINO 2026.4 runs its fully connected layers without a fused activation on MLAS, which does: measured on an
  Intel Sapphire Rapids (2 threads, 4096 x 1024 x 1024 fp32), MLAS ran at 120 G multiply-adds/s with the limits
  alone, 85 with CPUID masked and 127 unlimited (MKL limited to AVX2: 96-103), so without the mask such layers keep
  their AVX-512 kernels and an emulated AVX2 CPU looks faster than a real one. NumPy's and PyTorch's own CPU
  detection (cpuinfo) see the masked CPU too, and GLIBC_TUNABLES drops AVX-512 from glibc's string functions. What
  the mask does not reach is in `cpuid_mask.c`'s header (a program's start-up code, static programs, some ways of
  setting a SIGSEGV handler); a Python command is covered.
Without the mask (another OS, no compiler, no CPUID faulting, a sandbox that refuses it) the limits alone apply, and
`emulation_env` says why.
An emulation keeps the host's caches, memory and clocks, so its timings approximate a real CPU of that kind.
"""
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .files import atomic_path
from .runtimes.openvino import CACHE_ENV, cache_root

ISA_LIMIT_ENV = 'ONEDNN_MAX_CPU_ISA'
# The libraries' own limits per emulated kind. Read when those libraries load: set them before the process starts.
EMULATION_ENV = {
    'avx2': {'ATEN_CPU_CAPABILITY': 'avx2', 'MKL_ENABLE_INSTRUCTIONS': 'AVX2', ISA_LIMIT_ENV: 'AVX2',
             'OV_CPU_MAX_ISA': 'AVX2'},
    'avx2-vnni': {'ATEN_CPU_CAPABILITY': 'avx2', 'MKL_ENABLE_INSTRUCTIONS': 'AVX2', ISA_LIMIT_ENV: 'AVX2_VNNI',
                  'OV_CPU_MAX_ISA': 'AVX2_VNNI'},
}
# The CPUID feature bits an emulated kind may hide: name -> (leaf, subleaf, register, bit), from Intel's SDM vol. 2A
# (CPUID) and AMD's APM vol. 3: AVX-512, AMX and the extensions after AVX2.
CPUID_BITS = {
    'avx512f': (7, 0, 'ebx', 16), 'avx512dq': (7, 0, 'ebx', 17), 'avx512ifma': (7, 0, 'ebx', 21),
    'avx512pf': (7, 0, 'ebx', 26), 'avx512er': (7, 0, 'ebx', 27), 'avx512cd': (7, 0, 'ebx', 28),
    'avx512bw': (7, 0, 'ebx', 30), 'avx512vl': (7, 0, 'ebx', 31),
    'avx512vbmi': (7, 0, 'ecx', 1), 'avx512_vbmi2': (7, 0, 'ecx', 6), 'gfni': (7, 0, 'ecx', 8),
    'avx512_vnni': (7, 0, 'ecx', 11), 'avx512_bitalg': (7, 0, 'ecx', 12), 'avx512_vpopcntdq': (7, 0, 'ecx', 14),
    'avx512_4vnniw': (7, 0, 'edx', 2), 'avx512_4fmaps': (7, 0, 'edx', 3), 'avx512_vp2intersect': (7, 0, 'edx', 8),
    'amx_bf16': (7, 0, 'edx', 22), 'avx512_fp16': (7, 0, 'edx', 23), 'amx_tile': (7, 0, 'edx', 24),
    'amx_int8': (7, 0, 'edx', 25),
    'sha512': (7, 1, 'eax', 0), 'sm3': (7, 1, 'eax', 1), 'sm4': (7, 1, 'eax', 2), 'avx_vnni': (7, 1, 'eax', 4),
    'avx512_bf16': (7, 1, 'eax', 5), 'amx_fp16': (7, 1, 'eax', 21), 'avx_ifma': (7, 1, 'eax', 23),
    'avx_vnni_int8': (7, 1, 'edx', 4), 'avx_ne_convert': (7, 1, 'edx', 5), 'amx_complex': (7, 1, 'edx', 8),
    'avx_vnni_int16': (7, 1, 'edx', 10), 'avx10': (7, 1, 'edx', 19), 'apx_f': (7, 1, 'edx', 21),
}
# What each emulated kind hides: Zen 1-3 and Skylake have none of CPUID_BITS; Alder Lake has AVX-VNNI and GFNI.
# (VAES and VPCLMULQDQ stay: Zen 3 and Alder Lake have them.)
CPUID_HIDDEN = {'avx2': frozenset(CPUID_BITS), 'avx2-vnni': frozenset(CPUID_BITS) - {'avx_vnni', 'gfni'}}
# glibc's own choice of its string functions, made before any library loads: its tunable drops AVX-512 there too.
GLIBC_HWCAPS = 'glibc.cpu.hwcaps=-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL,-AVX512ER,-AVX512PF'
_HIDE_REGISTERS = ((7, 0, 'ebx'), (7, 0, 'ecx'), (7, 0, 'edx'), (7, 1, 'eax'), (7, 1, 'edx'))  # cpuid_mask.c's order
MASKED_ENV = 'CIAOSR_CPUID_MASKED'  # set to 1 by cpuid_mask.c in a process whose CPUID it masks
HIDE_ENV = 'CIAOSR_CPUID_HIDE'  # what cpuid_mask.c hides: its five masks
_checked: dict[Path, str | None] = {}  # cpuid_mask_library's result for each library: None (works) or the problem


def proc_cpu_flags() -> frozenset[str] | None:
    """The CPU's flags as Linux's /proc/cpuinfo lists them (its first processor), or None where there is no such
    file (macOS, Windows)."""
    try:
        with open('/proc/cpuinfo') as info:
            return frozenset(next((line.split(':', 1)[1].split() for line in info if line.startswith('flags')), []))
    except OSError:
        return None


def emulated_kind() -> str | None:
    """The CPU kind whose `EMULATION_ENV` this process runs under (all its variables set as there), else None."""
    return next((kind for kind, env in EMULATION_ENV.items()
                 if all(os.environ.get(name) == value for name, value in env.items())), None)


def cpuid_masked() -> bool:
    """Whether this process's CPUID is masked (`cpuid_mask.c` loaded and CPUID faulting on)."""
    return os.environ.get(MASKED_ENV) == '1'


def cpuid_mask_library() -> Path:
    """The CPUID-masking library, `cpuid_mask.c` compiled with $CC (else `cc`) into cache_root()/cpuid-mask on first
    use (a file per source version, written whole or not at all), and checked once per process to turn the mask on
    in a child. RuntimeError, with the reason, where it cannot work: not Linux on x86-64, a CPU (or VM) without CPUID
    faulting, a cache path that LD_PRELOAD cannot name, no C compiler, a failed build, or a child in which the mask
    did not come on (a seccomp sandbox)."""
    if sys.platform != 'linux' or platform.machine() not in ('x86_64', 'AMD64'):
        raise RuntimeError(f'CPUID masking needs Linux on x86-64, not {sys.platform} on {platform.machine()}')
    if 'cpuid_fault' not in (proc_cpu_flags() or ()):
        raise RuntimeError('this CPU (or VM) offers no CPUID faulting (no cpuid_fault flag in /proc/cpuinfo)')
    code = Path(__file__).with_name('cpuid_mask.c')
    try:
        library = cache_root() / 'cpuid-mask' / f'cpuid_mask-{hashlib.sha256(code.read_bytes()).hexdigest()[:16]}.so'
        if any(separator in str(library) for separator in ' :'):  # LD_PRELOAD splits its list at both
            raise RuntimeError(f'LD_PRELOAD cannot name {library} (a space or colon in the path): set {CACHE_ENV}')
        if not library.exists():
            _build(code, library)
        if library not in _checked:
            probe = subprocess.run([sys.executable, '-c', f'import os; print(os.environ.get("{MASKED_ENV}"))'],
                                   env={**_without_mask(os.environ), HIDE_ENV: '0 0 0 0 0', 'LD_PRELOAD': str(library)},
                                   capture_output=True, text=True, timeout=60)
            _checked[library] = None if probe.stdout.strip() == '1' else (
                f'the mask did not come on in a child process ({probe.stderr.strip()[-300:] or "no message"})')
    except (OSError, subprocess.TimeoutExpired) as err:  # an unwritable cache, a compiler that cannot be run
        raise RuntimeError(f'cannot build or try the CPUID mask: {err}') from err
    if _checked[library]:
        raise RuntimeError(_checked[library])
    return library


def _build(code: Path, library: Path) -> None:
    """`code` compiled into `library` (RuntimeError when there is no compiler or the build fails)."""
    compiler = shlex.split(os.environ.get('CC', '')) or [shutil.which('cc') or shutil.which('gcc') or '']
    if not compiler[0]:
        raise RuntimeError('no C compiler to build it with (set $CC, or install gcc)')
    library.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(library) as temporary:
        built = subprocess.run([*compiler, '-O2', '-shared', '-fPIC', '-o', str(temporary), str(code), '-ldl'],
                               capture_output=True, text=True, timeout=300)
        if built.returncode != 0:
            raise RuntimeError(f'{compiler[0]} failed to build {code}: '
                               f'{built.stderr.strip()[-500:] or f"exit status {built.returncode}"}')


def _without_mask(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without any CPUID mask: its variables, and cpuid_mask libraries in LD_PRELOAD, removed."""
    env = {name: value for name, value in environ.items() if name not in (MASKED_ENV, HIDE_ENV)}
    preload = [entry for entry in env.pop('LD_PRELOAD', '').replace(':', ' ').split()
               if not Path(entry).name.startswith('cpuid_mask-')]
    if preload:
        env['LD_PRELOAD'] = ' '.join(preload)
    return env


def emulation_env(kind: str) -> tuple[dict[str, str], str | None]:
    """(environment, problem): this process's environment with what makes a new process see CPU kind `kind`
    (a key of EMULATION_ENV): the libraries' limits, and CPUID masked (`cpuid_mask_library()` added to LD_PRELOAD,
    the bits of CPUID_HIDDEN[kind] cleared, glibc's AVX-512 string functions dropped, GLIBC_HWCAPS) with problem
    None; where the mask cannot work, the limits alone, and the problem says why. An outer mask (this process's) is
    not passed on. KeyError for another kind."""
    env = _without_mask(os.environ)
    env.update(EMULATION_ENV[kind])
    try:
        library = cpuid_mask_library()
    except RuntimeError as err:
        return env, (f'CPUID not masked ({err}): code that reads CPUID alone, such as OpenVINO\'s MLAS products, '
                     f'still uses this CPU\'s own instruction sets, so timings flatter the emulated CPU')
    masks = [sum(1 << bit for name, (*where, bit) in CPUID_BITS.items() if name in CPUID_HIDDEN[kind]
                 and tuple(where) == register) for register in _HIDE_REGISTERS]
    env[HIDE_ENV] = ' '.join(f'{mask:x}' for mask in masks)
    env['LD_PRELOAD'] = ' '.join(filter(None, [env.get('LD_PRELOAD'), str(library)]))  # after any (ASan first)
    env['GLIBC_TUNABLES'] = ':'.join(filter(None, [env.get('GLIBC_TUNABLES'), GLIBC_HWCAPS]))
    return env, None


def main(argv: list[str] | None = None) -> int:
    """`python -m ciaosr_arch.emulation KIND COMMAND [ARG ...]`: COMMAND run in place of this process under
    `emulation_env(KIND)`, after one line on stderr saying what is emulated (and why CPUID is not masked, where it
    is not). Exit status 2 with a usage line for a wrong command line, 127 with one line when COMMAND cannot be run."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in EMULATION_ENV:
        print(f'usage: python -m ciaosr_arch.emulation {{{",".join(EMULATION_ENV)}}} COMMAND [ARG ...]',
              file=sys.stderr)
        return 2
    env, problem = emulation_env(argv[0])
    print(f'emulating CPU kind {argv[0]}: {problem or "libraries limited, CPUID masked"}', file=sys.stderr, flush=True)
    try:
        os.execvpe(argv[1], argv[1:], env)
    except OSError as err:
        print(f'error: cannot run {argv[1]}: {err.strerror}', file=sys.stderr)
        return 127


if __name__ == '__main__':
    sys.exit(main())
