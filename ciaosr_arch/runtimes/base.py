"""The runtime protocol (`DecodeRuntime`), the PyTorch runtime every net is built with, and the query counts.

A runtime runs, with the signatures and results of the net's own methods, the arithmetic that dominates inference:
the per-query decode (`CiaoSR.attend`), the pair table's rows (`CiaoSR.pair_rows`) and the cross-scale attention's
products (`CrossScaleAttention.paste`); and tells the engine (`ciaosr_arch.engine`) how many queries to decode per
call (`chunk`), how much memory each of them holds (`query_bytes`) and in which context to decode (`decoding`).
A runtime is not a module: attaching one never changes a net's parameters or state_dict.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:  # the archs import this module
    from ..archs.ciaosr_arch import AttendTables, CiaoSR
    from ..archs.cross_scale_attention import CrossScaleAttention
    from ..archs.implicit_base import ImplicitSRNet

# A cache-sized number of queries: their decode activations (~45 MB fp32 for EDSR-baseline) stay near the CPU's
# caches. The PyTorch decode's chunk on CPUs (1024 decodes ~30% faster than 16384 on one core here, with 5% of the
# memory), the OpenVINO decode's compiled block (larger blocks measured no faster), and the smallest chunk the
# memory plan gives (`ciaosr_arch.engine.memory_plan`).
CACHE_QUERIES = 1024
# A number of queries that amortises a fixed cost per decode call: kernel launches on GPUs (~700 MB of fp32
# activations for EDSR-baseline), OpenVINO's hand-over of the CPU from PyTorch's threads and back (measured, x16
# decode of a 192 x 192 tile's bank, bf16, 2 threads: 86 k queries/s with calls of 1024 queries, 146 k with 16384).
CALL_QUERIES = 16384
PREFERRED_CHUNK = {'cpu': CACHE_QUERIES, 'cuda': CALL_QUERIES}  # the PyTorch decode's chunk, by device type
QUERY_BYTES = 45_000  # memory per query of the PyTorch decode in fp32 (64 channels, 256-wide MLPs)


@runtime_checkable
class DecodeRuntime(Protocol):
    """What runs a net's per-query and attention arithmetic (`net.runtime`, and its cross-scale attention's)."""

    name: str  # 'torch' or 'openvino', as `ciaosr_arch.runtime.use_runtime` names it

    def attend(self, net: CiaoSR, bank: AttendTables, index: torch.Tensor, extra: torch.Tensor,
               score_index: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """`net.attend(bank, index, extra, score_index, residual)`: RGB [B, Q, 3] of Q queries."""
        ...

    def pair_rows(self, net: CiaoSR, products: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`net.pair_rows(products)`: products [..., K] -> ([..., H], [...])."""
        ...

    def paste(self, attention: CrossScaleAttention, filters: torch.Tensor, queries: torch.Tensor,
              sources: torch.Tensor) -> torch.Tensor:
        """`attention.paste(filters, queries, sources)` of a CrossScaleAttention: [B, M, P], a new tensor (the caller
        changes it in place)."""
        ...

    def chunk(self, device: torch.device | str) -> int:
        """Queries per decode call on `device` (`super_resolve`'s default chunk)."""
        ...

    def query_bytes(self, net: ImplicitSRNet[Any], half: bool) -> float:
        """Bytes of memory per query of a decode call of `net` (`half`: under fp16/bf16 autocast)."""
        ...

    def decoding(self) -> AbstractContextManager[None]:
        """The context the engine decodes in (its chunks of one bank's queries)."""
        ...

    def release(self) -> bool:
        """Drops what the runtime keeps between calls only to be faster next time (compiled models); whether it held
        anything. The memory plan calls it when what is in use leaves too little room."""
        ...


class TorchRuntime:
    """The `DecodeRuntime` of PyTorch, the reference: each call runs the net's own method. Holds nothing, so it is
    shared by copies of a net (deepcopy, DataParallel replicas) without tying them to one another."""

    name = 'torch'

    def attend(self, net: CiaoSR, bank: AttendTables, index: torch.Tensor, extra: torch.Tensor,
               score_index: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return net.attend(bank, index, extra, score_index, residual)

    def pair_rows(self, net: CiaoSR, products: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return net.pair_rows(products)

    def paste(self, attention: CrossScaleAttention, filters: torch.Tensor, queries: torch.Tensor,
              sources: torch.Tensor) -> torch.Tensor:
        return attention.paste(filters, queries, sources)

    def chunk(self, device: torch.device | str) -> int:
        """PREFERRED_CHUNK by the type of `device` (torch.device or its name; GPUs' for any but the CPU)."""
        return PREFERRED_CHUNK.get(torch.device(device).type, PREFERRED_CHUNK['cuda'])

    def query_bytes(self, net: ImplicitSRNet[Any], half: bool) -> float:
        """QUERY_BYTES scaled by the encoder's width relative to 64 channels (approximate for RDN/SwinIR), halved
        under autocast."""
        return QUERY_BYTES * (net.encoder.out_channels / 64) / (2 if half else 1)

    def decoding(self) -> AbstractContextManager[None]:
        return nullcontext()

    def release(self) -> bool:
        """Nothing to drop: PyTorch's runtime keeps nothing between calls."""
        return False


def attach(net: nn.Module, runtime: DecodeRuntime) -> None:
    """`runtime` as what runs `net`'s arithmetic: set as the runtime of `net` and of each of its submodules that has
    one (a CiaoSR's cross-scale attention)."""
    for module in net.modules():
        if 'runtime' in vars(module):
            module.runtime = runtime  # pyright: ignore[reportArgumentType]  (torch types Module.__setattr__ for
            # tensors and modules; any other value is set as a plain attribute)
