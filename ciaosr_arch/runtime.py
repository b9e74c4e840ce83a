"""The choice of runtime: what runs a net's matrix arithmetic on this machine (`use_runtime`), by the CPU's kind.

Every net is built with PyTorch's runtime attached (`ciaosr_arch.runtimes.base.TorchRuntime`); `use_runtime`
attaches the one chosen: PyTorch, the reference, or OpenVINO (`ciaosr_arch.runtimes.openvino`, an optional install,
with its opt-in int8 decode, `ciaosr_arch.runtimes.int8`). Which is fastest depends on the CPU's kind (`cpu_kind`,
CPU_PLANS): 'auto' takes OpenVINO on AVX-512 and AVX2 CPUs, PyTorch on older ones; the int8 decode pays only with
VNNI (`int8_problem`). `ciaosr_arch.emulation` emulates a narrower kind on a wider CPU, for tests and benchmarks
(`cpu_flags` and `cpu_kind` honour its limit).
"""
import os
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from .archs.ciaosr_arch import CiaoSR
from .emulation import ISA_LIMIT_ENV, proc_cpu_flags
from .runtimes.base import TorchRuntime, attach
from .runtimes.int8 import CALIBRATION_DIR
from .runtimes.openvino import OpenVINORuntime, openvino_version

RUNTIMES = ('auto', 'torch', 'openvino')

# CPU kinds, from the instruction sets that decide this model's speed, fastest first: what `cpu_kind` names.
CPU_KINDS = {
    'avx512-bf16': 'AVX-512 with BF16 and VNNI (Zen 4+, Xeon Cooper Lake+)',
    'avx512-vnni': 'AVX-512 with VNNI, no BF16 (Xeon Cascade Lake, Ice Lake)',
    'avx512': 'AVX-512 without VNNI (Xeon Skylake)',
    'avx2-vnni': 'AVX2 with AVX-VNNI, no AVX-512 (Core Alder Lake+)',
    'avx2': 'AVX2 only (Zen 1-3, Core before Ice Lake)',
    'older': 'no AVX2',
}
# What runs fastest on each kind. exact: the runtime that `use_runtime(net, 'auto')` picks for the fp32 path
# (OpenVINO with AVX2 too: emulated AVX2 with CPUID masked, one thread, 64 x 64 at x4, PyTorch 2.94x Real-ESRGAN's
# time, OpenVINO 2.40x; 96 x 96 whole, 2 threads, 6.09 s against 5.17 s; CPUs without AVX2 are not measured).
# int8: whether the opt-in int8 decode is faster than the default there: it needs VNNI's uint8 x int8 products
# (oneDNN's brgemm; without VNNI OpenVINO runs those layers as jit_gemm_I8, no faster than its fp32 brgemm, and adds
# the quantizing reorders, see README: Performance).
CPU_PLANS = {
    'avx512-bf16': {'exact': 'openvino', 'int8': True},
    'avx512-vnni': {'exact': 'openvino', 'int8': True},
    'avx512': {'exact': 'openvino', 'int8': False},
    'avx2-vnni': {'exact': 'openvino', 'int8': True},
    'avx2': {'exact': 'openvino', 'int8': False},
    'older': {'exact': 'torch', 'int8': False},
}
# The /proc/cpuinfo flags that `cpu_kind` reads, allowed under each value of oneDNN's ISA limit ONEDNN_MAX_CPU_ISA
# (oneDNN's names; a limit allows the instruction sets that are subsets of it, so an AVX-512 limit drops AVX-VNNI).
_AVX512 = ('avx2', 'avx512f')
_BF16 = (*_AVX512, 'avx512_vnni', 'avx512_bf16')
ISA_LIMITS = {
    'SSE41': (), 'AVX': (), 'AVX2': ('avx2',), 'AVX2_VNNI': ('avx2', 'avx_vnni'), 'AVX2_VNNI_2': ('avx2', 'avx_vnni'),
    'AVX512_CORE': _AVX512, 'AVX512_CORE_VNNI': (*_AVX512, 'avx512_vnni'),
    'AVX512_CORE_BF16': _BF16, 'AVX512_CORE_FP16': _BF16, 'AVX10_1_512': _BF16,  # and the AMX ones: no limit here
}
def cpu_flags(emulated: bool = True) -> frozenset[str]:
    """The instruction-set flags of this CPU that `cpu_kind` reads (avx2, avx512f, avx512_vnni, avx512_bf16,
    avx_vnni), Linux's /proc/cpuinfo names, as a frozenset; limited to what $ONEDNN_MAX_CPU_ISA allows when it is
    set and `emulated` is true (an emulated narrower CPU, `ciaosr_arch.emulation`; an unknown value limits nothing,
    as in oneDNN): libraries that ignore the limit (x264, unless CPUID is masked) see the CPU's own flags,
    `emulated=False`. Without /proc/cpuinfo (macOS, Windows) from PyTorch's cpuinfo, which does not report
    AVX-VNNI."""
    wanted = {'avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx_vnni'}
    flags = proc_cpu_flags()
    if flags is None:
        found = {'avx2': torch.cpu._is_avx2_supported(), 'avx512f': torch.cpu._is_avx512_supported(),
                 'avx512_vnni': torch.cpu._is_vnni_supported(), 'avx512_bf16': torch.cpu._is_avx512_bf16_supported()}
        flags = [name for name, present in found.items() if present]
    flags = wanted.intersection(flags)
    limit = os.environ.get(ISA_LIMIT_ENV, '').upper()
    if emulated and limit in ISA_LIMITS:
        flags &= set(ISA_LIMITS[limit])
    return frozenset(flags)


def cpu_kind(flags: frozenset[str] | set[str] | None = None) -> str:
    """This CPU's kind, a key of CPU_KINDS, from `flags` (default: `cpu_flags()`, which honours an emulated limit)."""
    flags = cpu_flags() if flags is None else flags
    if 'avx512f' in flags:
        return 'avx512-bf16' if {'avx512_bf16', 'avx512_vnni'} <= flags else (
            'avx512-vnni' if 'avx512_vnni' in flags else 'avx512')
    if 'avx2' in flags:
        return 'avx2-vnni' if 'avx_vnni' in flags else 'avx2'
    return 'older'


def int8_problem(kind: str | None = None) -> str | None:
    """Why the int8 decode is not offered on CPU kind `kind` (default: this CPU's), or None where it is faster
    than the default path (CPU_PLANS)."""
    kind = kind or cpu_kind()
    if CPU_PLANS[kind]['int8']:
        return None
    return (f'this CPU ({CPU_KINDS[kind]}) has no VNNI int8 instructions (AVX-512 VNNI or AVX-VNNI), where the int8 '
            f'decode is slower than the default fp32 path')


def use_runtime(net: nn.Module, runtime: str = 'auto', threads: int | None = None, int8: bool = False,
                report: Callable[[str], Any] | None = None) -> str:
    """Choose what runs `net`'s matrix arithmetic, attach it (`net.runtime`, a new `DecodeRuntime`) and return the
    choice ('torch' or 'openvino', its `name`).

    runtime: 'torch' (PyTorch, the reference), 'openvino', or 'auto' (the faster of the two for this CPU's kind,
    CPU_PLANS[cpu_kind()]['exact'], where OpenVINO applies: installed, a float32 CiaoSR on the CPU;
    PyTorch otherwise; with `int8`, OpenVINO). threads: OpenVINO's threads (default: torch.get_num_threads()).
    int8: the opt-in int8 decode (`ciaosr_arch.runtimes.int8`; OpenVINO only; allowed on every CPU, but faster
    than the default only where `int8_problem()` is None). report: called with a one-line message after each
    one-time conversion of a graph (`OpenVINORuntime`). ValueError for an unknown runtime or a thread count below 1,
    RuntimeError when 'openvino' (or int8) does not apply (with the reason). Nothing is converted or compiled until
    the model runs; each call attaches a new runtime (call it again after changing the weights:
    graphs hold the weights of their first run).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f'runtime must be one of {", ".join(RUNTIMES)}, got {runtime!r}')
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f'threads must be None (PyTorch\'s count) or a whole number >= 1, got {threads!r}')
    problem = None
    if runtime != 'torch':
        if not isinstance(net, CiaoSR):
            problem = f'{type(net).__name__} has no OpenVINO path (CiaoSR has)'
        elif next(net.parameters()).device.type != 'cpu':
            problem = f'OpenVINO runs on the CPU; the model is on {next(net.parameters()).device}'
        elif next(net.parameters()).dtype != torch.float32:
            problem = (f'OpenVINO runs float32 networks; the model is {next(net.parameters()).dtype} (for bf16, '
                       'keep it float32 and run under torch.autocast, as --bf16 does)')
        elif openvino_version() is None:
            problem = 'OpenVINO is not installed (pip install "ciaosr[runtime]", or openvino==2026.4.1)'
    if int8 and (runtime == 'torch' or problem):
        raise RuntimeError(f'int8 runs on OpenVINO only: {problem or "the runtime is torch"}')
    if int8 and not any(CALIBRATION_DIR.glob('*.png')):
        raise RuntimeError(f'int8: no calibration crops in {CALIBRATION_DIR} (a damaged install: reinstall ciaosr)')
    if problem and runtime == 'openvino':
        raise RuntimeError(f'runtime openvino: {problem}')
    if runtime == 'auto':
        runtime = 'torch' if problem or not int8 and CPU_PLANS[cpu_kind()]['exact'] == 'torch' else 'openvino'
    attach(net, OpenVINORuntime(cast(CiaoSR, net), threads, int8=int8, report=report)  # a CiaoSR: `problem`
           if runtime == 'openvino' else TorchRuntime())
    return runtime
