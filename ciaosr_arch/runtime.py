"""CiaoSR's matrix arithmetic on an inference runtime for CPUs: OpenVINO, an optional install.

PyTorch's float32 matrix products go through MKL, which runs the AVX-512 CPUs of other vendors at a fraction
of their speed; OpenVINO's own kernels do not. Measured on a 2-core AMD EPYC (AVX-512 BF16, no AMX) under
load, 2 threads, the decode of 1024 queries of a 170 x 170 tile at x4: PyTorch fp32 69 ms, OpenVINO fp32 24 ms,
OpenVINO bf16 15 ms (ONNX Runtime fp32, and torch.compile with freezing in fp32 and bf16, were slower than
OpenVINO on the same shapes).

`use_runtime(net)` attaches an `OpenVINORuntime` to a CiaoSR (`net.runtime`, `net.cs_attn.runtime`), which then
does, with the same signatures and results, what these methods do in PyTorch:
  - `CiaoSR.attend`: the per-query decode (table gathers, key/value/decoder MLPs, softmax), ~2.6 M
    multiply-adds per query for EDSR-baseline, the bulk of the work at scales >= 2;
  - `CiaoSR.pair_rows`: the pair table's product with the key net's output layer (encode, fp32);
  - `CrossScaleAttention.paste`: the cross-scale attention's scores, softmax and paste-back products (encode,
    fp32).
Index work, convolutions and folds stay in PyTorch, and so does the encode in bf16 (oneDNN's bf16 products
are fast; OpenVINO's measured slower there: 96 x 96 encode 0.92 s in PyTorch, 1.26 s with them on OpenVINO,
against 2.41 s and 1.84 s in fp32). Each graph is converted from the PyTorch method itself (by
tracing, so there is one definition of the math) once per model, saved as OpenVINO IR under `cache_root()`
(`~/.cache/ciaosr/openvino/` by default: converting takes seconds, reading back milliseconds), and compiled
once per input shape, dtype and precision, kept for the process (the COMPILED_KEPT most recent). Precision
follows the caller: fp32 (equal to PyTorch up to float rounding: max abs 4.2e-7 on photos, [0, 1] RGB), or bf16 under
`torch.autocast('cpu', torch.bfloat16)` (OpenVINO's bf16 inference precision, reading bf16 tensors as they are).
With `int8=True` (opt-in, `--int8`), the decode's key and value nets run as uint8 x int8 products (`INT8_NETS`,
`calibrate`, `fake_quantized`): 1.8x the bf16 decode here (249 k against 140 k queries/s, x16, 64 x 64 tile), PSNR
against fp32 64.9-70.1 dB on RealSRSet crops at x4, 63.1-70.6 dB at x16.

Which of these is fastest depends on the CPU's kind (`cpu_kind`, CPU_PLANS): 'auto' takes OpenVINO on AVX-512 and
AVX2 CPUs, PyTorch on older ones; the int8 decode pays only with VNNI (`int8_problem`). EMULATION_ENV limits PyTorch
and OpenVINO to a narrower kind's instruction sets, for tests and benchmarks.
"""
import hashlib
import inspect
import os
import sys
import time
import warnings
import weakref
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .archs.coords import make_cell, make_coord
from .files import atomic_path

RUNTIMES = ('auto', 'torch', 'openvino')
QUERY_BLOCK = 1024  # queries per compiled decode call (a cache-sized block; larger blocks measured no faster)
# Queries per `attend` call, in blocks of QUERY_BLOCK: each call hands the CPU from PyTorch's threads to OpenVINO's and
# back, which costs time. Measured, x16 decode of a 192 x 192 tile's bank, bf16, 2 threads: 86 k queries/s with
# calls of 1024 queries, 146 k with 16384.
CALL_QUERIES = 16384
CALL_QUERY_BYTES = 1024  # memory per query of an `attend` call: its index tensors (the activations are per block)
COMPILED_KEPT = 8  # compiled models kept per runtime, most recently used first: images of many sizes pile up
CACHE_ENV = 'CIAOSR_CACHE_DIR'  # overrides the cache folder
# Tables of the bank that `attend` reads, per kind of bank (pair table or not); 'unfolded' is a view of 'values'.
TABLES = {'pair': ('key_proj', 'value_proj', 'values', 'pair_key', 'pair_bias'),
          'plain': ('key_proj', 'value_proj', 'values')}
# int8 decode (opt-in): the products of the key and value nets after their first layer (86% of the decode's
# multiply-adds for EDSR-baseline) take uint8 activations and int8 weights; the decoder imnet_q stays in the caller's
# precision (in int8 it loses too much: a PyTorch simulation measured 36-66 dB against fp32 on RealSRSet crops, x4,
# where the key and value nets alone gave 74-87 dB). Activation ranges are calibrated once per model on the photo
# crops in CALIBRATION_DIR at CALIBRATION_SCALES (x1.5 decodes without the pair table, the larger scales with it).
INT8_NETS = ('imnet_k', 'imnet_v')
GRAPH_NOTES = {'attend-pair': 'decode', 'attend-plain': 'decode (scales < 2)', 'attend-pair-int8': 'int8 decode',
               'attend-plain-int8': 'int8 decode (scales < 2)', 'pair_rows': "decode's pair table",
               'paste': 'cross-scale attention'}  # graph names as the one-time conversion message names them
CALIBRATION_DIR = Path(__file__).parent / 'calibration'
CALIBRATION_SCALES = (1.5, 4, 16)
CALIBRATION_QUERIES = 8192  # queries decoded per calibration crop and scale (an even spread of the output pixels)
CALIBRATION_CHUNK = 1024  # ... in chunks of this many (the engine's CPU chunk: bounds their activations)


def import_openvino():
    """The `openvino` module, imported without its usage reports. OpenVINO sends an event to Google Analytics when
    it is imported and at each model conversion (package openvino-telemetry, on unless the user opted out); this
    project never contacts the network, so unless openvino or openvino-telemetry is already imported, the import
    is made with openvino-telemetry hidden from the process (`sys.modules` entry None), which OpenVINO treats as
    not installed (it falls back to its own no-op stand-in). ImportError when OpenVINO is not installed."""
    if 'openvino' not in sys.modules:
        sys.modules.setdefault('openvino_telemetry', None)
    import openvino
    return openvino


def openvino_version():
    """The installed OpenVINO's version string, or None when it is not installed."""
    try:
        return import_openvino().__version__
    except (ImportError, OSError):  # not installed, or a broken install (a shared library missing)
        return None


def cache_root():
    """Folder of this package's caches: $CIAOSR_CACHE_DIR, else $XDG_CACHE_HOME/ciaosr, else ~/.cache/ciaosr."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'ciaosr'


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
# (OpenVINO with AVX2 too: emulated AVX2, 64 x 64 at x4, one thread, PyTorch 6.34x Real-ESRGAN's time, OpenVINO 1.46x;
# CPUs without AVX2 are not measured).
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
ISA_LIMIT_ENV = 'ONEDNN_MAX_CPU_ISA'
_AVX512 = ('avx2', 'avx512f')
_BF16 = (*_AVX512, 'avx512_vnni', 'avx512_bf16')
ISA_LIMITS = {
    'SSE41': (), 'AVX': (), 'AVX2': ('avx2',), 'AVX2_VNNI': ('avx2', 'avx_vnni'), 'AVX2_VNNI_2': ('avx2', 'avx_vnni'),
    'AVX512_CORE': _AVX512, 'AVX512_CORE_VNNI': (*_AVX512, 'avx512_vnni'),
    'AVX512_CORE_BF16': _BF16, 'AVX512_CORE_FP16': _BF16, 'AVX10_1_512': _BF16,  # and the AMX ones: no limit here
}
# Environment that makes PyTorch (ATen's kernels, MKL, oneDNN) and OpenVINO (its CPU plugin's kernels and its oneDNN)
# use only the instruction sets of a narrower CPU kind, for tests and benchmarks on a wider CPU. Read when those
# libraries load: set it before the process starts (`ciaosr-benchmark-speed --isa` re-executes itself with it).
EMULATION_ENV = {
    'avx2': {'ATEN_CPU_CAPABILITY': 'avx2', 'MKL_ENABLE_INSTRUCTIONS': 'AVX2', ISA_LIMIT_ENV: 'AVX2',
             'OV_CPU_MAX_ISA': 'AVX2'},
    'avx2-vnni': {'ATEN_CPU_CAPABILITY': 'avx2', 'MKL_ENABLE_INSTRUCTIONS': 'AVX2', ISA_LIMIT_ENV: 'AVX2_VNNI',
                  'OV_CPU_MAX_ISA': 'AVX2_VNNI'},
}


def cpu_flags():
    """The instruction-set flags of this CPU that `cpu_kind` reads (avx2, avx512f, avx512_vnni, avx512_bf16,
    avx_vnni), Linux's /proc/cpuinfo names, as a frozenset; limited to what $ONEDNN_MAX_CPU_ISA allows when it is
    set (an emulated narrower CPU, `EMULATION_ENV`; an unknown value limits nothing, as in oneDNN). Without
    /proc/cpuinfo (macOS, Windows) from PyTorch's cpuinfo, which does not report AVX-VNNI."""
    wanted = {'avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx_vnni'}
    try:
        with open('/proc/cpuinfo') as info:
            flags = next((line.split(':', 1)[1].split() for line in info if line.startswith('flags')), [])
    except OSError:
        found = {'avx2': torch.cpu._is_avx2_supported(), 'avx512f': torch.cpu._is_avx512_supported(),
                 'avx512_vnni': torch.cpu._is_vnni_supported(), 'avx512_bf16': torch.cpu._is_avx512_bf16_supported()}
        flags = [name for name, present in found.items() if present]
    flags = wanted.intersection(flags)
    limit = os.environ.get(ISA_LIMIT_ENV, '').upper()
    if limit in ISA_LIMITS:
        flags &= set(ISA_LIMITS[limit])
    return frozenset(flags)


def cpu_kind(flags=None):
    """This CPU's kind, a key of CPU_KINDS, from `flags` (default: `cpu_flags()`, which honours an emulated limit)."""
    flags = cpu_flags() if flags is None else flags
    if 'avx512f' in flags:
        return 'avx512-bf16' if {'avx512_bf16', 'avx512_vnni'} <= flags else (
            'avx512-vnni' if 'avx512_vnni' in flags else 'avx512')
    if 'avx2' in flags:
        return 'avx2-vnni' if 'avx_vnni' in flags else 'avx2'
    return 'older'


def emulated_kind():
    """The CPU kind whose `EMULATION_ENV` this process runs under (all its variables set as there), else None."""
    return next((kind for kind, env in EMULATION_ENV.items()
                 if all(os.environ.get(name) == value for name, value in env.items())), None)


def int8_problem(kind=None):
    """Why the int8 decode is not offered on CPU kind `kind` (default: this CPU's), or None where it is faster
    than the default path (CPU_PLANS)."""
    kind = kind or cpu_kind()
    if CPU_PLANS[kind]['int8']:
        return None
    return (f'this CPU ({CPU_KINDS[kind]}) has no VNNI int8 instructions (AVX-512 VNNI or AVX-VNNI), where the int8 '
            f'decode is slower than the default fp32 path')


def use_runtime(net, runtime='auto', threads=None, int8=False, report=None):
    """Choose what runs `net`'s matrix arithmetic and return the choice ('torch' or 'openvino').

    runtime: 'torch' (PyTorch, the reference), 'openvino', or 'auto' (the faster of the two for this CPU's kind,
    CPU_PLANS[cpu_kind()]['exact'], where OpenVINO applies: installed, a CiaoSR whose parameters are on the CPU;
    PyTorch otherwise; with `int8`, OpenVINO). threads: OpenVINO's threads (default:
    torch.get_num_threads()). int8: the opt-in int8 decode (`INT8_NETS`; OpenVINO only; allowed on every CPU,
    but faster than the default only where `int8_problem()` is None). report: called with a one-line message
    after each one-time conversion of a graph (`OpenVINORuntime`). ValueError for an unknown
    runtime, RuntimeError when 'openvino' (or int8) does not apply (with the reason). Nothing is converted or
    compiled until the model runs; each call attaches a new runtime (call it again after changing the weights:
    graphs hold the weights of their first run).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f'runtime must be one of {", ".join(RUNTIMES)}, got {runtime!r}')
    problem = None
    if runtime != 'torch':
        if not hasattr(net, 'pair_rows'):
            problem = f'{type(net).__name__} has no OpenVINO path (CiaoSR has)'
        elif next(net.parameters()).device.type != 'cpu':
            problem = f'OpenVINO runs on the CPU; the model is on {next(net.parameters()).device}'
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
    _attach(net, OpenVINORuntime(net, threads, int8=int8, report=report) if runtime == 'openvino' else None)
    return runtime


def _attach(net, runtime):
    """`runtime` (or None: PyTorch) as what runs `net`'s decode and its cross-scale attention's products."""
    net.runtime = runtime
    if getattr(net, 'cs_attn', None) is not None:
        net.cs_attn.runtime = runtime


def int8_layers(net):
    """The linear layers of `net` (a CiaoSR) that the int8 decode quantizes: each of INT8_NETS but its first layer."""
    return [layer for name in INT8_NETS for layer in getattr(net, name).layers[2::2]]


@torch.no_grad()
def calibrate(net, folder=None, scales=CALIBRATION_SCALES, queries=CALIBRATION_QUERIES):
    """Largest input value of each of `int8_layers(net)` over PyTorch's fp32 decode of the RGB photo crops
    (*.png) in `folder` (default CALIBRATION_DIR) at each of `scales`, `queries` output pixels spread evenly over
    each output -> [float]. Their inputs follow a ReLU, so [0, largest] is their whole range. ValueError if a crop
    cannot be read or a layer never ran (no crops; or no scale < 2, where the key net's output layer runs)."""
    folder = Path(folder or CALIBRATION_DIR)
    layers, tops = int8_layers(net), {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, i=i: tops.__setitem__(i, max(tops.get(i, 0.0), float(args[0].max())))
    ) for i, layer in enumerate(layers)]
    attached = net.runtime
    _attach(net, None)
    try:
        with torch.autocast('cpu', enabled=False):
            for path in sorted(folder.glob('*.png')):
                pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if pixels is None:
                    raise ValueError(f'cannot read the calibration crop {path}')
                pixels = np.ascontiguousarray(pixels[..., ::-1])
                lr = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None]
                for scale in scales:
                    size = (round(lr.shape[-2] * scale), round(lr.shape[-1] * scale))
                    coord = make_coord(size)
                    coord = coord[torch.linspace(0, len(coord) - 1, min(queries, len(coord))).long()][None]
                    bank = net.encode(lr, size)
                    for part in coord.split(CALIBRATION_CHUNK, 1):  # chunks of the engine's size on CPUs
                        net.decode(bank, part, make_cell(size, part.shape[1]))
    finally:
        _attach(net, attached)
        for hook in hooks:
            hook.remove()
    if len(tops) < len(layers):
        raise ValueError(f'calibration in {folder} did not run every int8 layer (no crops, or no scale < 2?)')
    return [tops[i] for i in range(len(layers))]


@contextmanager
def fake_quantized(layers, tops):
    """Within the block, each nn.Linear of `layers` computes on its input quantized to uint8 over [0, top] and on its
    weights quantized to int8 (symmetric, per output channel), with torch's fake-quantize ops, which OpenVINO's
    converter turns into FakeQuantize nodes and its CPU plugin into uint8 x int8 products (VNNI). Each layer's
    own forward comes back when the block ends, however it ends."""
    before = [vars(layer).get('forward') for layer in layers]
    try:
        for layer, top in zip(layers, tops):
            step = max(top, 1e-6) / 255
            weight_step = layer.weight.detach().abs().amax(1).clamp_min(1e-12) / 127
            zero = torch.zeros(weight_step.shape, dtype=torch.int32)

            def forward(x, layer=layer, step=step, weight_step=weight_step, zero=zero):
                x = torch.fake_quantize_per_tensor_affine(x, step, 0, 0, 255)
                weight = torch.fake_quantize_per_channel_affine(layer.weight, weight_step, zero, 0, -127, 127)
                return F.linear(x, weight, layer.bias)
            layer.forward = forward
        yield
    finally:
        for layer, forward in zip(layers, before):
            vars(layer).pop('forward', None)
            if forward is not None:
                layer.forward = forward


@contextmanager
def torch_threads(count):
    """PyTorch's thread count set to `count` within the block, and back to what it was when the block ends."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _precision():
    """OpenVINO's inference precision for the caller: 'bf16' under a CPU bfloat16 autocast, else 'f32'."""
    return 'bf16' if torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16 else 'f32'


class _Method(nn.Module):
    """`function` of tensors (positional inputs and outputs) that uses the module `owner`, the form OpenVINO's
    converter traces: `owner` is registered, so that its weights are traced as parameters."""

    def __init__(self, owner, function):
        super().__init__()
        self.owner, self.function = owner, function

    def forward(self, *tensors):
        return self.function(*tensors)


class OpenVINORuntime:
    """`attend`, `pair_rows` and `paste` of one CiaoSR on OpenVINO (see the module's docstring).

    Inputs are handed to OpenVINO without copies (float32 or bfloat16, contiguous); outputs come back as new
    float32 tensors. `attend` runs fixed blocks of `block` queries (the last one padded), so that its compiled
    shapes do not change with the number of queries; the encode's graphs are compiled per shape. `cache`: folder
    of the converted graphs (default: cache_root()/openvino). The graphs hold the weights the model had when it
    first ran. `report`: called with a line naming the seconds of each graph's one-time conversion (a cache miss:
    a first run on this machine, or of a new model or version), or None.
    """

    chunk = CALL_QUERIES  # queries per decode call (`ciaosr_arch.engine.decode_chunk`)
    query_bytes = CALL_QUERY_BYTES  # memory per query of a decode call (`ciaosr_arch.engine.memory_plan`)

    def __init__(self, net, threads=None, block=QUERY_BLOCK, cache=None, int8=False, report=None):
        self.ov, self.net, self.block, self.int8, self.report = import_openvino(), net, block, int8, report
        self.threads = threads or torch.get_num_threads()
        self.cache = Path(cache) if cache is not None else cache_root() / 'openvino'
        self.core = self.ov.Core()
        self.models, self.compiled, self.fingerprint, self.ranges = {}, OrderedDict(), None, None
        self.checked = (None, True)  # (weak reference to the last bank's `values`, whether it is finite)

    def attend(self, bank, index, extra, score_index, residual):
        """`CiaoSR.attend` -> RGB [B, Q, 3] float32. A bank whose features hold NaN or infinite values goes to
        PyTorch instead: OpenVINO's ReLU maps NaN to 0, which would turn a broken encode into plausible output."""
        if not self._finite(bank['values']):
            return self.net.attend(bank, index, extra, score_index, residual).float()
        kind = 'pair' if 'pair_key' in bank else 'plain'
        tables = [bank[name].contiguous() for name in TABLES[kind]]  # alive until the end: OpenVINO borrows them
        layout = [index, extra, score_index, residual]
        batch, queries = index.shape[:2]
        shapes = [t.shape for t in tables] + [(t.shape[0], self.block, *t.shape[2:]) for t in layout]
        first_block = [part[:, :self.block] for part in layout]  # the example a first conversion traces
        name = f'attend-{kind}' + ('-int8' if self.int8 else '')
        request = self._request(name, self._attend_method(kind), tables + first_block, shapes)
        for i, table in enumerate(tables):
            request.set_input_tensor(i, self._tensor(table))
        out = torch.empty(batch, queries, 3)
        for start in range(0, queries, self.block):
            count = min(self.block, queries - start)
            pieces = [part[:, start:start + count] for part in layout]
            if count < self.block:  # pad the last block with copies of its first query (valid rows; dropped)
                pieces = [torch.cat([p, p[:, :1].expand(-1, self.block - count, *p.shape[2:])], 1) for p in pieces]
            pieces = [p.contiguous() for p in pieces]  # alive until infer returns
            for i, piece in enumerate(pieces, len(tables)):
                request.set_input_tensor(i, self._tensor(piece))
            request.infer()
            out[:, start:start + count] = torch.from_numpy(request.get_output_tensor(0).data[:, :count])
        return out

    @contextmanager
    def decoding(self):
        """PyTorch on one thread within the block (`ciaosr_arch.engine` decodes in it): the index work between decode
        calls is light, and after each of its parallel regions PyTorch's idle OpenMP threads spin-wait, taking the
        cores from OpenVINO's. Measured, x16 decode of a 64 x 64 tile, int8, 2 threads: 84 ms per 16384 queries with
        PyTorch on 2 threads, 71 ms on one (73 ms with OMP_WAIT_POLICY=PASSIVE instead). A first conversion within
        the block (and the int8 calibration) runs on the runtime's `threads`."""
        with torch_threads(1):
            yield

    def _finite(self, values):
        """Whether a bank's feature table `values` (its other tables are linear in it) is finite, checked once per
        bank by its fp32 sum, which NaN and infinities reach (the last bank's table is remembered by a weak
        reference, so a freed bank is never taken for a new one). Measured for a 64 x 64 tile: 0.3 ms, where an
        element-wise check of every table takes ~15 ms."""
        ref, finite = self.checked
        if ref is None or ref() is not values:
            finite = bool(torch.isfinite(torch.sum(values, dtype=torch.float32)))
            self.checked = (weakref.ref(values), finite)
        return finite

    def pair_rows(self, products):
        """`CiaoSR.pair_rows`: products [..., K] -> ([..., H], [...]); in PyTorch under bf16 autocast."""
        if _precision() == 'bf16':
            return self.net.pair_rows(products)
        return self._run('pair_rows', self.net.pair_rows, [products.contiguous()])

    def paste(self, filters, queries, patches):
        """`CrossScaleAttention.paste` -> [B, C * 9s^2, P]; in PyTorch under bf16 autocast."""
        if _precision() == 'bf16':
            return self.net.cs_attn.paste(filters, queries, patches)
        return self._run('paste', self.net.cs_attn.paste, [t.contiguous() for t in (filters, queries, patches)])[0]

    def _run(self, name, method, inputs):
        """Outputs (new float32 tensors) of graph `name` (traced from `method`) on inputs compiled at their shapes."""
        request = self._request(name, method, inputs, [t.shape for t in inputs])
        for i, tensor in enumerate(inputs):
            request.set_input_tensor(i, self._tensor(tensor))
        request.infer()
        return [torch.from_numpy(tensor.data.copy()) for tensor in request.output_tensors]

    def _attend_method(self, kind):
        """`net.attend` with the bank's tables of `kind` as leading positional inputs."""
        def attend(*tensors):
            bank = dict(zip(TABLES[kind], tensors))
            bank['unfolded'] = self.net.unfolded(bank['values'])
            return self.net.attend(bank, *tensors[len(TABLES[kind]):])
        return attend

    def _tensor(self, tensor):
        """An OpenVINO tensor over the memory of a contiguous CPU tensor (bfloat16 through its 16-bit pattern)."""
        if tensor.dtype == torch.bfloat16:
            bits = tensor.view(torch.int16).numpy()
            return self.ov.Tensor(bits, list(bits.shape), self.ov.Type.bf16)
        return self.ov.Tensor(np.ascontiguousarray(tensor.numpy()), shared_memory=True)

    def _request(self, name, method, inputs, shapes):
        """An infer request of graph `name` compiled for these input shapes and dtypes, in the caller's precision
        (`_precision`); compiled on first use."""
        precision = _precision()
        key = (name, tuple(tuple(s) for s in shapes), tuple(t.dtype for t in inputs), precision)
        if key not in self.compiled:
            from openvino.preprocess import PrePostProcessor

            model = self._model(name, method, inputs).clone()
            model.reshape({i: list(shape) for i, shape in enumerate(shapes)})
            steps = PrePostProcessor(model)
            for i, tensor in enumerate(inputs):
                if tensor.dtype == torch.bfloat16:
                    steps.input(i).tensor().set_element_type(self.ov.Type.bf16)
            compiled = self.core.compile_model(steps.build(), 'CPU', {
                'INFERENCE_PRECISION_HINT': precision, 'INFERENCE_NUM_THREADS': self.threads,
                'PERFORMANCE_HINT': 'LATENCY', 'NUM_STREAMS': 1})
            self.compiled[key] = compiled.create_infer_request()
            if len(self.compiled) > COMPILED_KEPT:
                self.compiled.popitem(last=False)
        self.compiled.move_to_end(key)
        return self.compiled[key]

    def _model(self, name, method, inputs):
        """The converted graph `name` with dynamic shapes: read from the disk cache, or traced from `method` with
        float32 copies of `inputs` as examples and saved there (fp32 weights, each file written whole or not at all,
        `atomic_path`, the weights before the graph that names them, so concurrent processes never read half a
        graph; a warning if it cannot be written, and one if a cached graph cannot be read, which is then converted
        again and replaced)."""
        if name in self.models:
            return self.models[name]
        path = self.cache / f'{name}-{self._fingerprint()}.xml'
        model = None
        if path.exists():
            try:
                model = self.core.read_model(path)
            except RuntimeError as err:  # damaged (a disk error, a copy cut short): convert again
                warnings.warn(f'cannot read the cached OpenVINO graph {path}, converting it again: '
                              f'{str(err).strip().splitlines()[0]}', stacklevel=2)
        if model is None:
            start = time.perf_counter()
            examples = tuple(t.float() if t.is_floating_point() else t for t in inputs)
            with torch_threads(self.threads):  # also within `decoding()`
                quantized = nullcontext()
                if name.endswith('-int8'):
                    if self.ranges is None:  # once per runtime, for both kinds of decode graph
                        self.ranges = calibrate(self.net)
                    quantized = fake_quantized(int8_layers(self.net), self.ranges)
                with warnings.catch_warnings(), torch.autocast('cpu', enabled=False), quantized:
                    warnings.simplefilter('ignore')  # the tracer's notes on Python ints in shapes
                    model = self.ov.convert_model(_Method(self.net, method).eval(), example_input=examples)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path, '.xml') as graph, atomic_path(path.with_suffix('.bin')) as weights:
                    self.ov.serialize(model, graph, weights)  # save_model would name the weights after the graph
            except (OSError, RuntimeError) as err:  # a read-only or full disk: this process converts again
                warnings.warn(f'cannot cache the OpenVINO graph in {self.cache}: {err}', stacklevel=2)
            if self.report:
                self.report(f'preparing the {GRAPH_NOTES[name]} for OpenVINO (once, then read from {self.cache}): '
                            f'{time.perf_counter() - start:.1f} s')
        self.models[name] = model
        return model

    def _fingerprint(self):
        """Hex digest of everything the graphs depend on: the arch code (with the encoders and coordinates, which
        the int8 calibration runs), the weights and options of the model, the torch, BasicSR and OpenVINO versions,
        the calibration crops (computed once)."""
        if self.fingerprint is None:
            import basicsr

            from .archs import ciaosr_arch, coords, cross_scale_attention, encoders, implicit_base

            digest = hashlib.sha256()
            options = (self.net.softmax_scale, getattr(self.net.cs_attn, 'softmax_scale', None))
            for part in (torch.__version__, basicsr.__version__, self.ov.__version__, repr(options), *(
                    inspect.getsource(m) for m in (ciaosr_arch, coords, cross_scale_attention, encoders,
                                                   implicit_base, sys.modules[__name__]))):
                digest.update(part.encode())
            for path in sorted(CALIBRATION_DIR.glob('*.png')):  # the int8 graphs' calibration
                digest.update(path.read_bytes())
            for key, tensor in self.net.state_dict().items():
                digest.update(f'{key}{tuple(tensor.shape)}'.encode())
                digest.update(tensor.detach().float().contiguous().numpy().tobytes())
            self.fingerprint = digest.hexdigest()[:20]
        return self.fingerprint
