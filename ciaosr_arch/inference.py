"""Whole-image arbitrary-scale inference: query chunking and seam-free LR-space tiling.

`super_resolve` evaluates every output pixel centre of an H x W grid. Without tiling the image is
encoded once and its queries decoded in chunks, which bounds the memory of the head but not of
the encoder and the cross-scale attention (quadratic in the LR area). With tiling, each LR tile is
encoded once and asked for exactly the global output pixels whose centres fall inside it (in
tile-local coordinates), so arbitrary, non-integer scales need no resampling; overlapping
predictions are blended with a raised-cosine window ('smooth') or averaged ('uniform', the official
test-time tiling, which matches its results for integer scales).
"""
import math

import torch

from .archs.coords import axis_centres

DEFAULT_CHUNK = 16384  # queries decoded at once: ~60 MB of activations for the EDSR-baseline head


def output_size(in_size, scale=None, size=None):
    """(H, W) of the result: `size` if given, else round(h * scale), round(w * scale)."""
    if (scale is None) == (size is None):
        raise ValueError('give exactly one of scale and size')
    if size is not None:
        out = tuple(int(s) for s in size)
        if len(out) != 2 or min(out) < 1:
            raise ValueError(f'size must be two positive integers (H, W), got {size}')
        return out
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f'scale must be a finite number > 0, got {scale!r}')
    return max(1, round(in_size[0] * scale)), max(1, round(in_size[1] * scale))


def _decode_grid(net, bank, rows, cols, cells, chunk):
    """Decode the grid rows x cols (coordinates [n], [m]) in chunks -> [B, 3, n, m]."""
    batch, n, m = cells.shape[0], rows.numel(), cols.numel()
    out = cells.new_empty(batch, 3, n * m)
    for start in range(0, n * m, chunk):
        flat = torch.arange(start, min(start + chunk, n * m), device=rows.device)
        coord = torch.stack([rows[flat // m], cols[flat % m]], -1).expand(batch, -1, -1)
        rgb = net.decode(bank, coord, cells[:, None, :].expand(-1, flat.numel(), -1))
        out[:, :, start:start + flat.numel()] = rgb.transpose(1, 2).float()
    return out.view(batch, 3, n, m)


def tile_origins(length, tile, overlap):
    """Tile starts along one axis: every (tile - overlap) pixels, plus a last one flush with the end."""
    stride = max(1, tile - overlap)
    return list(range(0, length - tile, stride)) + [length - tile]


def _blend_window(positions, start, end, lo_inner, hi_inner, overlap):
    """Weights of output pixels at LR positions in a tile [start, end]: 1 inside, a raised-cosine ramp
    over `overlap` LR pixels at tile edges that lie inside the image (lo_inner / hi_inner)."""
    weight = torch.ones_like(positions)
    if overlap > 0:
        if lo_inner:
            weight = weight * torch.clamp((positions - start) / overlap, 1e-3, 1)
        if hi_inner:
            weight = weight * torch.clamp((end - positions) / overlap, 1e-3, 1)
        weight = 0.5 - 0.5 * torch.cos(math.pi * weight)
    return weight


@torch.no_grad()
def super_resolve(net, lr, scale=None, size=None, chunk=DEFAULT_CHUNK, tile=0, tile_overlap=32, blend='smooth'):
    """Super-resolve lr [B, 3, h, w] in [0, 1] to [B, 3, H, W] in [0, 1] (clamped).

    H, W = round(h * scale), round(w * scale), or `size` = (H, W). `chunk`: queries per decode call
    (results do not depend on it). `tile` > 0: LR tile side (square, at most min(h, w)) with
    `tile_overlap` LR pixels of overlap, blended with `blend` = 'smooth' | 'uniform'.
    """
    h, w = lr.shape[-2:]
    out_h, out_w = output_size((h, w), scale, size)
    rows, cols = axis_centres(out_h, lr.device), axis_centres(out_w, lr.device)
    side = min(tile, h, w) if tile else max(h, w)
    if side >= h and side >= w:
        cells = lr.new_tensor([2 / out_h, 2 / out_w]).expand(lr.shape[0], 2)
        return _decode_grid(net, net.encode(lr), rows, cols, cells, chunk).clamp_(0, 1)
    if blend not in ('smooth', 'uniform'):
        raise ValueError(f"blend must be 'smooth' or 'uniform', got {blend!r}")

    overlap = min(tile_overlap, side - 1)
    out = lr.new_zeros(lr.shape[0], 3, out_h, out_w, dtype=torch.float32)
    total = lr.new_zeros(out_h, out_w, dtype=torch.float32)
    # Output pixel centres in continuous LR pixel units (0 = left/top edge of the image).
    row_pos, col_pos = (rows + 1) / 2 * h, (cols + 1) / 2 * w
    cells = lr.new_tensor([2 / out_h * h / side, 2 / out_w * w / side]).expand(lr.shape[0], 2)
    for y in tile_origins(h, side, overlap):
        row_sel = ((row_pos >= y) & (row_pos < y + side)).nonzero().squeeze(1)
        for x in tile_origins(w, side, overlap):
            col_sel = ((col_pos >= x) & (col_pos < x + side)).nonzero().squeeze(1)
            bank = net.encode(lr[..., y:y + side, x:x + side])
            local_rows = (row_pos[row_sel] - y) / side * 2 - 1
            local_cols = (col_pos[col_sel] - x) / side * 2 - 1
            pred = _decode_grid(net, bank, local_rows, local_cols, cells, chunk)
            if blend == 'smooth':
                weight = (_blend_window(row_pos[row_sel], y, y + side, y > 0, y + side < h, overlap)[:, None]
                          * _blend_window(col_pos[col_sel], x, x + side, x > 0, x + side < w, overlap)[None, :])
            else:
                weight = torch.ones(row_sel.numel(), col_sel.numel(), device=lr.device)
            out[:, :, row_sel[:, None], col_sel[None, :]] += pred * weight
            total[row_sel[:, None], col_sel[None, :]] += weight
    return (out / total).clamp_(0, 1)
