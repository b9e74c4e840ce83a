"""What the full-reference benchmark (`ciaosr.benchmark`) and the no-reference quality report
(`ciaosr.quality_report`) share: how a --model becomes something that upscales (a CiaoSR/LIIF network or a
fixed-scale network spandrel loads) and runs, the LR-grid index of an output, and the Markdown of their tables.

Each report keeps what is its own: its options, its protocol, its records and how it summarises them.
"""
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ciaosr_arch import load_model, super_resolve
from ciaosr_arch.checkpoint import read_checkpoint
from ciaosr_arch.engine import Net
from ciaosr_arch.shipped import resolve_weights

from .grid_index import GridIndexUndefined, grid_index
from .other_upscalers import FixedScaleUpscaler


def is_implicit_checkpoint(path: str | Path) -> bool:
    """Whether a file holds CiaoSR/LIIF weights (imnet / imnet_q keys), as far as `read_checkpoint` can read it."""
    try:
        state, _ = read_checkpoint(path)
    except ValueError:  # CheckpointError (e.g. a pickle weights_only refuses, which spandrel's restricted unpickler
        return False  # may read), or JSONDecodeError of other projects' non-JSON 'arch' metadata
    return any(key.startswith(('imnet.', 'imnet_q.')) for key in state)


def load_network(spec: str | Path, device: torch.device, tile: int, tile_pad: int) -> Net | FixedScaleUpscaler:
    """What a --model value upscales with: the CiaoSR/LIIF network (`load_model`, in eval mode on `device`) of a
    shipped name or a CiaoSR/LIIF checkpoint, else a `FixedScaleUpscaler` of a fixed-scale network file spandrel
    loads (fp32, LR tiles of `tile` px with `tile_pad` px of context, 0: whole images).

    A value that is no file goes to `load_model`, whose CheckpointError (one line) names what is missing (for a
    shipped name, its weights); UpscalerError (one line) for a file neither can use.
    """
    path = resolve_weights(spec)
    if not path.is_file() or is_implicit_checkpoint(path):
        return load_model(spec, device=device)
    return FixedScaleUpscaler(path, device, tile, tile_pad)


def upscale_tensor(net: Net, lr: torch.Tensor, size: tuple[int, int], device: torch.device,
                   dtype: torch.dtype | None = None, **tiling: Any) -> torch.Tensor:
    """A CiaoSR/LIIF network's output, float32 [1, 3, H, W] on the CPU, for lr float [1, 3, h, w] in [0, 1]; size:
    (H, W). `super_resolve` on `device` with `tiling` (tile, tile_overlap, blend), under autocast to `dtype` (None:
    float32, no autocast)."""
    with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
        return super_resolve(net, lr.to(device), size=size, **tiling).float().cpu()


def grid_result(img: np.ndarray, scale: float) -> tuple[float | None, str | None, list[float] | None]:
    """(index, None, phase profile as a list) of `grid_index` for an output img (uint8 [H, W, 3]) at `scale`, or
    (None, why not, None) where the index is undefined (a non-integer scale, an output too small or flat)."""
    try:
        result = grid_index(img, scale)
    except GridIndexUndefined as err:
        return None, str(err), None
    return result.index, None, list(result.profile)


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Markdown lines of a table: header cells, then rows of cells (strings); the first column left-aligned,
    the others right-aligned."""
    return (['| ' + ' | '.join(header) + ' |', '|---' + '|---:' * (len(header) - 1) + '|']
            + ['| ' + ' | '.join(row) + ' |' for row in rows])


def profile_line(label: str, profile: Sequence[float]) -> str:
    """A Markdown list item of a mean phase profile: `- label: ` and its values with two decimals."""
    return f'- {label}: ' + ' '.join(f'{value:.2f}' for value in profile)
