"""CiaoSR's matrix arithmetic on an inference runtime for CPUs: OpenVINO, an optional install.

PyTorch's float32 matrix products go through MKL, which runs the AVX-512 CPUs of other vendors at a fraction
of their speed; OpenVINO's own kernels do not. Measured on a 2-core AMD EPYC (AVX-512 BF16, no AMX) under
load, 2 threads, the decode of 1024 queries of a 170 x 170 tile at x4: PyTorch fp32 69 ms, OpenVINO fp32 24 ms,
OpenVINO bf16 15 ms (ONNX Runtime fp32, and torch.compile with freezing in fp32 and bf16, were slower than
OpenVINO on the same shapes).

`OpenVINORuntime` is a `DecodeRuntime` (`ciaosr_arch.runtimes.base`; `ciaosr_arch.runtime.use_runtime` attaches
it) that does, with the same signatures and results, what these methods do in PyTorch:
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
With `int8=True` (opt-in, `--int8`), the decode's key and value nets run as uint8 x int8 products
(`ciaosr_arch.runtimes.int8`).

The `openvino` package is imported only when a runtime is made (`import_openvino`), so this module imports without it.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import os
import sys
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import error_line
from ..files import atomic_path
from . import int8 as int8_module
from .base import CACHE_QUERIES, CALL_QUERIES
from .int8 import CALIBRATION_DIR, calibrate, fake_quantized, int8_layers

if TYPE_CHECKING:  # the archs import the runtimes' base
    from ..archs.ciaosr_arch import AttendTables, CiaoSR
    from ..archs.cross_scale_attention import CrossScaleAttention

CALL_QUERY_BYTES = 1024  # memory per query of an `attend` call: its index tensors (the activations are per block)
COMPILED_KEPT = 8  # compiled models kept per runtime, most recently used first: images of many sizes pile up
CACHE_ENV = 'CIAOSR_CACHE_DIR'  # overrides the cache folder
GRAPH_NOTES = {'attend-pair': 'decode', 'attend-plain': 'decode (scales < 2)', 'attend-pair-int8': 'int8 decode',
               'attend-plain-int8': 'int8 decode (scales < 2)', 'pair_rows': "decode's pair table",
               'paste': 'cross-scale attention'}  # graph names as the one-time conversion message names them


def import_openvino() -> ModuleType:
    """The `openvino` module, imported without its usage reports. OpenVINO sends an event to Google Analytics when
    it is imported and at each model conversion (package openvino-telemetry, on unless the user opted out); this
    project never contacts the network, so unless openvino or openvino-telemetry is already imported, the import
    is made with openvino-telemetry hidden from the process (`sys.modules` entry None), which OpenVINO treats as
    not installed (it falls back to its own no-op stand-in). ImportError when OpenVINO is not installed."""
    if 'openvino' not in sys.modules:
        sys.modules.setdefault('openvino_telemetry', None)  # pyright: ignore[reportArgumentType]  (None in
        # sys.modules is the documented way to make an import fail; typeshed allows modules only)
    import openvino
    return openvino


def openvino_version() -> str | None:
    """The installed OpenVINO's version string, or None when it is not installed."""
    try:
        return import_openvino().__version__
    except (ImportError, OSError):  # not installed, or a broken install (a shared library missing)
        return None


def cache_root() -> Path:
    """Folder of this package's caches: $CIAOSR_CACHE_DIR, else $XDG_CACHE_HOME/ciaosr, else ~/.cache/ciaosr."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'ciaosr'


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """PyTorch's thread count set to `count` within the block, and back to what it was when the block ends."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _precision() -> str:
    """OpenVINO's inference precision for the caller: 'bf16' under a CPU bfloat16 autocast, else 'f32'."""
    return 'bf16' if torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16 else 'f32'


def graph_tables(bank: AttendTables) -> list[torch.Tensor]:
    """The tables of a bank that the decode graph takes, as its leading inputs: key_proj, value_proj, values, then
    the pair table's pair_key and pair_bias when the bank has one ('unfolded', a view of 'values', is taken in the
    graph)."""
    tables = [bank['key_proj'], bank['value_proj'], bank['values']]
    if 'pair_key' in bank and 'pair_bias' in bank:
        tables += [bank['pair_key'], bank['pair_bias']]
    return tables


def bank_tables(net: CiaoSR, tables: Sequence[torch.Tensor]) -> AttendTables:
    """The `AttendTables` of `net` whose `graph_tables` are `tables`."""
    key_proj, value_proj, values, *pair = tables
    bank: AttendTables = {'unfolded': net.unfolded(values), 'values': values, 'key_proj': key_proj,
                          'value_proj': value_proj}
    if pair:
        bank['pair_key'], bank['pair_bias'] = pair
    return bank


class _Method(nn.Module):
    """`function` of tensors (positional inputs and outputs) that uses the module `owner`, the form OpenVINO's
    converter traces: `owner` is registered, so that its weights are traced as parameters."""

    def __init__(self, owner: nn.Module, function: Callable[..., Any]):
        super().__init__()
        self.owner, self.function = owner, function

    def forward(self, *tensors: torch.Tensor) -> Any:
        return self.function(*tensors)


class OpenVINORuntime:
    """The `DecodeRuntime` of one CiaoSR on OpenVINO: its `attend`, `pair_rows` and `paste` (see the module's
    docstring). Made for `net`, whose weights its graphs hold; attach it to `net` only.

    Inputs are handed to OpenVINO without copies (float32 or bfloat16, contiguous); outputs come back as new
    float32 tensors. `attend` runs fixed blocks of `block` queries (the last one padded), so that its compiled
    shapes do not change with the number of queries; the encode's graphs are compiled per shape. `cache`: folder
    of the converted graphs (default: cache_root()/openvino). The graphs hold the weights the model had when it
    first ran. `report`: called with a line naming the seconds of each graph's one-time conversion (a cache miss:
    a first run on this machine, or of a new model or version), or None.
    """

    name = 'openvino'

    def __init__(self, net: CiaoSR, threads: int | None = None, block: int = CACHE_QUERIES,
                 cache: str | Path | None = None, int8: bool = False, report: Callable[[str], object] | None = None):
        self.ov, self.net, self.block, self.int8, self.report = import_openvino(), net, block, int8, report
        self.threads = threads or torch.get_num_threads()
        self.cache = Path(cache) if cache is not None else cache_root() / 'openvino'
        self.core = self.ov.Core()
        self.models: dict[str, Any] = {}  # converted graphs (openvino.Model) by name
        self.compiled: OrderedDict[tuple, Any] = OrderedDict()  # infer requests, most recently used last
        self.fingerprint: str | None = None
        self.ranges: list[float] | None = None  # the int8 layers' calibrated input ranges
        # (weak reference to the last bank's `values`, whether it is finite)
        self.checked: tuple[weakref.ref[torch.Tensor] | None, bool] = (None, True)

    def __deepcopy__(self, memo: dict[int, Any]) -> OpenVINORuntime:
        """A runtime of the same settings for the copy of its net (`copy.deepcopy` of the net, as an EMA copy or a
        user's makes, copies it): it converts its graphs, or reads them from the cache, when it first runs (graphs
        and compiled models belong to this runtime's OpenVINO core, which cannot be copied)."""
        return OpenVINORuntime(copy.deepcopy(self.net, memo), self.threads, self.block, self.cache, self.int8,
                               self.report)

    def attend(self, net: CiaoSR, bank: AttendTables, index: torch.Tensor, extra: torch.Tensor,
               score_index: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """`CiaoSR.attend` -> RGB [B, Q, 3] float32. A bank whose features hold NaN or infinite values goes to
        PyTorch instead: OpenVINO's ReLU maps NaN to 0, which would turn a broken encode into plausible output."""
        if not self._finite(bank['values']):
            return net.attend(bank, index, extra, score_index, residual).float()
        kind = 'pair' if 'pair_key' in bank else 'plain'
        tables = [t.contiguous() for t in graph_tables(bank)]  # alive until the end: OpenVINO borrows them
        layout = [index, extra, score_index, residual]
        batch, queries = index.shape[:2]
        shapes = [t.shape for t in tables] + [(t.shape[0], self.block, *t.shape[2:]) for t in layout]
        first_block = [part[:, :self.block] for part in layout]  # the example a first conversion traces
        name = f'attend-{kind}' + ('-int8' if self.int8 else '')
        request = self._request(name, self._attend_method(len(tables)), tables + first_block, shapes)
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

    def chunk(self, device: torch.device | str) -> int:
        """CALL_QUERIES queries per decode call, in blocks of `block` (OpenVINO runs on the CPU only)."""
        return CALL_QUERIES

    def query_bytes(self, net: Any, half: bool) -> float:
        """CALL_QUERY_BYTES: a decode call holds its queries' index tensors; activations only a block's."""
        return CALL_QUERY_BYTES

    def release(self) -> bool:
        """Drops the compiled models (up to COMPILED_KEPT, each a few tens to hundreds of MB); the converted graphs
        stay, so a shape used again compiles in about a second. Whether there were any."""
        held = bool(self.compiled)
        self.compiled.clear()
        return held

    @contextmanager
    def decoding(self) -> Iterator[None]:
        """PyTorch on one thread within the block (`ciaosr_arch.engine` decodes in it): the index work between decode
        calls is light, and after each of its parallel regions PyTorch's idle OpenMP threads spin-wait, taking the
        cores from OpenVINO's. Measured, x16 decode of a 64 x 64 tile, int8, 2 threads: 84 ms per 16384 queries with
        PyTorch on 2 threads, 71 ms on one (73 ms with OMP_WAIT_POLICY=PASSIVE instead). A first conversion within
        the block (and the int8 calibration) runs on the runtime's `threads`."""
        with torch_threads(1):
            yield

    def _finite(self, values: torch.Tensor) -> bool:
        """Whether a bank's feature table `values` (its other tables are linear in it) is finite, checked once per
        bank by its fp32 sum, which NaN and infinities reach (the last bank's table is remembered by a weak
        reference, so a freed bank is never taken for a new one). Measured for a 64 x 64 tile: 0.3 ms, where an
        element-wise check of every table takes ~15 ms."""
        ref, finite = self.checked
        if ref is None or ref() is not values:
            finite = bool(torch.isfinite(torch.sum(values, dtype=torch.float32)))
            self.checked = (weakref.ref(values), finite)
        return finite

    def pair_rows(self, net: CiaoSR, products: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`CiaoSR.pair_rows`: products [..., K] -> ([..., H], [...]); in PyTorch under bf16 autocast."""
        if _precision() == 'bf16':
            return net.pair_rows(products)
        key, bias = self._run('pair_rows', net.pair_rows, [products.contiguous()])
        return key, bias

    def paste(self, attention: CrossScaleAttention, filters: torch.Tensor, queries: torch.Tensor,
              sources: torch.Tensor) -> torch.Tensor:
        """`CrossScaleAttention.paste` -> [B, M, P]; in PyTorch under bf16 autocast."""
        if _precision() == 'bf16':
            return attention.paste(filters, queries, sources)
        return self._run('paste', attention.paste, [t.contiguous() for t in (filters, queries, sources)])[0]

    def _run(self, name: str, method: Callable[..., Any], inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Outputs (new float32 tensors) of graph `name` (traced from `method`) on inputs compiled at their shapes."""
        request = self._request(name, method, inputs, [t.shape for t in inputs])
        for i, tensor in enumerate(inputs):
            request.set_input_tensor(i, self._tensor(tensor))
        request.infer()
        return [torch.from_numpy(tensor.data.copy()) for tensor in request.output_tensors]

    def _attend_method(self, count: int) -> Callable[..., torch.Tensor]:
        """`net.attend` with the `count` tables of a bank, as `graph_tables` lists them, as leading positional
        inputs."""
        def attend(*tensors: torch.Tensor) -> torch.Tensor:
            return self.net.attend(bank_tables(self.net, tensors[:count]), *tensors[count:])
        return attend

    def _tensor(self, tensor: torch.Tensor) -> Any:
        """An OpenVINO tensor over the memory of a contiguous CPU tensor (bfloat16 through its 16-bit pattern)."""
        if tensor.dtype == torch.bfloat16:
            bits = tensor.view(torch.int16).numpy()
            return self.ov.Tensor(bits, list(bits.shape), self.ov.Type.bf16)
        return self.ov.Tensor(np.ascontiguousarray(tensor.numpy()), shared_memory=True)

    def _element_type(self, dtype: torch.dtype) -> Any:
        """OpenVINO's element type of a 16-bit float input, which the compiled graph converts to its precision
        (bfloat16 tables under bf16 autocast, float16 ones under a CPU float16 autocast, whose arithmetic
        OpenVINO then does in fp32), or None for the graph's own (float32 and integer inputs)."""
        return {torch.bfloat16: self.ov.Type.bf16, torch.float16: self.ov.Type.f16}.get(dtype)

    def _request(self, name: str, method: Callable[..., Any], inputs: Sequence[torch.Tensor],
                 shapes: Sequence[Sequence[int]]) -> Any:
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
                if (element_type := self._element_type(tensor.dtype)) is not None:
                    steps.input(i).tensor().set_element_type(element_type)
            compiled = self.core.compile_model(steps.build(), 'CPU', {
                'INFERENCE_PRECISION_HINT': precision, 'INFERENCE_NUM_THREADS': self.threads,
                'PERFORMANCE_HINT': 'LATENCY', 'NUM_STREAMS': 1})
            self.compiled[key] = compiled.create_infer_request()
            if len(self.compiled) > COMPILED_KEPT:
                self.compiled.popitem(last=False)
        self.compiled.move_to_end(key)
        return self.compiled[key]

    def _model(self, name: str, method: Callable[..., Any], inputs: Sequence[torch.Tensor]) -> Any:
        """The converted graph `name` with dynamic shapes: read from the disk cache, or traced from `method` with
        float32 copies of `inputs` as examples and saved there (fp32 weights, each file written whole or not at all,
        `atomic_path`, the weights before the graph that names them, so concurrent processes never read half a
        graph; a warning if it cannot be written, and one if a cached graph cannot be read, which is then converted
        again and replaced)."""
        if name in self.models:
            return self.models[name]
        known = self.fingerprint  # None on this runtime's first graph: then computed just now
        path = self.cache / f'{name}-{self._fingerprint()}.xml'
        model = None
        try:
            if path.exists():
                model = self.core.read_model(path)
        except (OSError, RuntimeError) as err:  # damaged (a disk error, a copy cut short), or a folder this user
            # cannot search: convert again
            warnings.warn(f'cannot read the cached OpenVINO graph {path}, converting it again: '
                          f'{error_line(err)}', stacklevel=2)
        if model is None:
            if known is not None:  # named after the weights the net has now, which the graph is traced from: they
                # may have changed since the first graph, and a process with those must not read this one as theirs
                self.fingerprint = None
                path = self.cache / f'{name}-{self._fingerprint()}.xml'
                if self.fingerprint != known:
                    self.ranges = None  # calibrated again for the int8 graphs, on these weights
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
                reuse = f'once, then read from {self.cache}'
            except (OSError, RuntimeError) as err:  # a read-only or full disk: this process converts again
                warnings.warn(f'cannot cache the OpenVINO graph in {self.cache}: {error_line(err)}', stacklevel=2)
                reuse = f'again next run: {self.cache} cannot be written'
            if self.report:
                self.report(f'preparing the {GRAPH_NOTES[name]} for OpenVINO ({reuse}): '
                            f'{time.perf_counter() - start:.1f} s')
        self.models[name] = model
        return model

    def _fingerprint(self) -> str:
        """Hex digest of everything the graphs depend on: the code of the archs (with the encoders and coordinates,
        which the int8 calibration runs), of this runtime and of the int8 module, the weights and options of the
        model (with the arch options `load_model` records, which the int8 calibration's ranges follow), the torch,
        BasicSR and OpenVINO versions, the calibration crops (computed once, and again before each conversion)."""
        if self.fingerprint is None:
            import basicsr

            from ..archs import ciaosr_arch, coords, cross_scale_attention, encoders, implicit_base

            digest = hashlib.sha256()
            options = (self.net.softmax_scale, getattr(self.net.cs_attn, 'softmax_scale', None),
                       getattr(self.net, 'arch', None))
            for part in (torch.__version__, basicsr.__version__, self.ov.__version__, repr(options), *(
                    inspect.getsource(m) for m in (ciaosr_arch, coords, cross_scale_attention, encoders,
                                                   implicit_base, int8_module, sys.modules[__name__]))):
                digest.update(part.encode())
            for path in sorted(CALIBRATION_DIR.glob('*.png')):  # the int8 graphs' calibration
                digest.update(path.read_bytes())
            for key, tensor in self.net.state_dict().items():
                digest.update(f'{key}{tuple(tensor.shape)}'.encode())
                digest.update(tensor.detach().float().contiguous().numpy().tobytes())
            self.fingerprint = digest.hexdigest()[:20]
        return self.fingerprint
