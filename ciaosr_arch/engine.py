"""Whole-image arbitrary-scale inference: query chunking, seam-free LR-space tiling, a memory plan.

`super_resolve` evaluates every output pixel centre of an H x W grid. Without tiling the image is
encoded once and its queries decoded in chunks, which bounds the memory of the head but not of
the encoder and the cross-scale attention (quadratic in the LR area). With tiling, each LR tile is
encoded once and asked for exactly the global output pixels whose centres fall in its share (in
tile-local coordinates), so arbitrary, non-integer scales need no resampling. 'smooth' tiling gives
each tile the output pixels up to the middle of its overlaps plus a narrow band where neighbours
cross-fade with raised-cosine weights (so only the bands are decoded twice, and no pixel is taken
from the edge of a tile); 'uniform' is the official test-time tiling (whole tiles averaged, which
matches its results for integer scales). `memory_plan` picks the tile and chunk for a memory budget.
The decode runs on the net's runtime (`net.runtime`, `ciaosr_arch.runtimes`), which also says how many queries to
decode per call and how much memory each holds.
"""
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .archs.coords import axis_centres
from .archs.implicit_base import ImplicitSRNet
from .errors import byte_size
from .runtimes.base import CACHE_QUERIES

# Peak memory of encoding one t x t tile for the full EDSR-baseline CiaoSR, CPU, fp32: growth of peak RSS over the
# model's own (glibc mmap threshold 128 KB), t = 64 / 128 / 192 / 256: 83 / 261 / 516 / 903 MB in PyTorch, i.e.
# 14,000 t^2 + 28 MB (the cross-scale attention scores ATTENTION_BAND query positions at a time, so it is linear in
# the tile area); 349 / 1,203 MB at t = 128 / 256 with the OpenVINO runtime (`ciaosr_arch.runtimes.openvino`),
# 18,300 t^2; bf16 autocast 135 / 453 MB. The constants round that up. See `memory_plan`.
TILE_OVERHEAD_BYTES = 300 * 2 ** 20  # allocator and oneDNN scratch (several threads), whatever the tile
ENCODE_PIXEL_BYTES = 20_000  # x t^2: features, a band of attention scores, building the bank (pair table)
# Largest automatic tile side of networks with the cross-scale attention (`speed_tile`): its work per LR pixel
# grows with the tile area (scores and paste-back: about 330 t^2 multiply-adds per pixel; the x4 decode is 42 M),
# so once memory no longer limits the tile, speed does. Measured on this project's 2-core CPU, 256 x 256 photo
# at x4, bf16, OpenVINO decode: tiles of 64 / 96 / 128 / 192 took 11.0 / 13.9 / 16.0 / 21.2 s, while Urban100 x4
# (first 4 images) scored 22.775 / 22.772 / 22.765 / 22.766 dB against 22.769 dB for whole images: no loss in
# PSNR. With the paste-back's cost halved (`cross_scale_attention.paste_sources`), 2-core Sapphire Rapids VM, fp32
# OpenVINO decode / int8: 64 / 96 / 128 took 23.8 / 24.0 / 26.4 s and 6.05 / 6.12 / 6.45 s: 64 stays.
# GPUs: 512, where the memory plan used to land with ~60 GB.
SPEED_TILE = {'cpu': 64, 'cuda': 512}
# Smallest LR tile side (`super_resolve` and the command-line tools): a tile under 8 pixels is mostly border for
# the encoder's 3x3 convolutions and the cross-scale attention's 6x6 patches, and is slow (every tile is encoded on
# its own). Measured, a 40 x 40 photo crop at x2, default model, tiles of 2 / 4 / 8 / 16 against the untiled
# output: PSNR 31.9 / 34.8 / 41.8 / 52.8 dB (random noise at tile 1: 17 dB).
MIN_TILE = 8
MIN_AUTO_TILE = 32  # smallest automatic tile side (`memory_plan`): a smaller budget fails with a message
# Widest cross-fade band of 'smooth' tiling, in output pixels: at large scales a band of overlap / 4 LR pixels is
# many output pixels, all decoded twice (at x16 with tiles of 64 overlapping by 16: 13% of the queries). Measured,
# three 100 x 100 RealSRSet crops at x16, int8, tiles of 64 / 16 against the untiled output: PSNR 58.89 / 67.30 /
# 64.46 dB with bands of 4 LR pixels (64 output pixels), 58.78 / 67.27 / 64.41 dB with 1 (16), the same max |diff|.
BAND_OUTPUT_PIXELS = 16

Net = ImplicitSRNet[Any]  # a CiaoSR or LIIF
Progress = Callable[[int, int], object]  # progress(done, total): decoded queries so far, of all
Tile = tuple[int, float, float, float]  # an axis tile of `axis_tiles`: (start, lo, hi, band)


def output_size(in_size: Sequence[int], scale: float | None = None,
                size: Sequence[int] | None = None) -> tuple[int, int]:
    """(H, W) of the result: `size` if given, else round(h * scale), round(w * scale).

    `scale`: any real number (Python, NumPy) that is finite and > 0; `size`: two integers >= 1 (H, W). ValueError
    if both or neither are given, or one is out of range; TypeError if it is not a number (a pair of integers).
    """
    if (scale is None) == (size is None):
        raise ValueError('give exactly one of scale and size')
    if size is not None:
        if not (hasattr(size, '__len__') and len(size) == 2 and all(_is_int(s) for s in size)):
            raise TypeError(f'size must be two integers (H, W), got {size!r}')
        if min(size) < 1:
            raise ValueError(f'size must be two positive integers (H, W), got {tuple(size)}')
        return int(size[0]), int(size[1])
    if not isinstance(scale, numbers.Real) or isinstance(scale, bool):
        raise TypeError(f'scale must be a number, got {type(scale).__name__}')
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f'scale must be a finite number > 0, got {scale!r}')
    return max(1, round(in_size[0] * float(scale))), max(1, round(in_size[1] * float(scale)))


def _is_int(value: object) -> bool:
    """Whether `value` is an integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_arguments(net: Net, lr: torch.Tensor, chunk: int | None, tile: int, tile_overlap: int | None,
                    progress: Progress | None) -> None:
    """Raise TypeError or ValueError (one line, naming the argument and what is accepted) unless `super_resolve`
    can run them as documented: lr a float tensor [B, 3, h, w] (B, h, w >= 1) of the dtype and on the device of
    the net's weights; chunk None or an integer >= 1; tile 0 or an integer >= MIN_TILE; tile_overlap None or an
    integer >= 0; progress None or callable."""
    if not torch.is_tensor(lr):
        raise TypeError(f'lr must be a torch.Tensor [B, 3, h, w], got {type(lr).__name__}')
    if lr.ndim != 4 or lr.shape[1] != 3 or lr.numel() == 0:
        raise ValueError(f'lr must be RGB images [B, 3, h, w] with B, h, w >= 1, got shape {tuple(lr.shape)}'
                         + (' (add the batch dimension: lr[None])' if lr.ndim == 3 and lr.shape[0] == 3 else ''))
    weight = next(net.parameters())
    if not lr.is_floating_point():
        raise TypeError(f'lr must hold floats in [0, 1], got {lr.dtype} (8-bit images: lr.float() / 255)')
    if lr.dtype != weight.dtype:
        raise TypeError(f'lr is {lr.dtype} but the network\'s weights are {weight.dtype}: convert one to the other '
                        '(torch.autocast mixes precisions)')
    if lr.device != weight.device:
        raise ValueError(f'lr is on {lr.device} but the network is on {weight.device}')
    for name, value in (('chunk', chunk), ('tile', tile), ('tile_overlap', tile_overlap)):
        if not (_is_int(value) or name != 'tile' and value is None):
            raise TypeError(f'{name} must be an integer, got {type(value).__name__}')
    if chunk is not None and chunk < 1:
        raise ValueError(f'chunk must be None (automatic) or at least 1, got {chunk}')
    if tile != 0 and tile < MIN_TILE:
        raise ValueError(f'tile must be 0 (no tiling) or at least {MIN_TILE} LR pixels, got {tile}: smaller tiles '
                         f'are mostly border for the encoder')
    if tile_overlap is not None and tile_overlap < 0:
        raise ValueError(f'tile_overlap must be at least 0, got {tile_overlap}')
    if progress is not None and not callable(progress):
        raise TypeError(f'progress must be a function progress(done, total) or None, got {type(progress).__name__}')


def speed_tile(net: Net, device: torch.device | str) -> int | None:
    """Largest automatic tile side for `net` on a device (torch.device or its name): SPEED_TILE by device type,
    except on CPUs for nets whose encode does not attend over the whole tile (`tile_wide_attention` False: `real`,
    LIIF): None there (no limit but memory), since their work per pixel does not grow with the tile, and smaller
    tiles only add overlap to encode twice and, with a deep encoder, move the output away from the whole image's
    (Real-ESRGAN's RRDB trunk of `real` reaches far: 64-px tiles gave 38.2 dB PSNR to its whole-image output on a
    128 x 128 RealSRSet crop at x4, 96-px tiles 48.8 dB). GPUs keep 512 for every net: the memory model was
    measured on CPUs, and much larger tiles take `real`'s x4 tail past the 2^31 elements of 32-bit indexing."""
    kind = torch.device(device).type
    if kind == 'cpu' and not net.tile_wide_attention:
        return None
    return SPEED_TILE.get(kind, SPEED_TILE['cuda'])


def default_overlap(tile: int) -> int:
    """The overlap (LR pixels) of tiles of side `tile` that the tools use unless told: a quarter of the tile, at
    most 32 (measured: Urban100 x4, first 4 images, bf16, PSNR of tiles 64/16 and 96/24 within 0.01 dB of whole
    images, see README)."""
    return min(32, tile // 4)


def encode_pixel_bytes(net: Net) -> float:
    """Bytes per LR pixel of encoding a tile with `net` (see `memory_plan`): ENCODE_PIXEL_BYTES scaled by the encoder's
    width relative to 64 channels."""
    return ENCODE_PIXEL_BYTES * net.encoder.out_channels / 64


def largest_tile(net: Net, work_bytes: float) -> int:
    """The largest LR tile side (pixels, possibly 0) whose encoding fits in `work_bytes` bytes (see `memory_plan`)."""
    return math.isqrt(int(max(work_bytes - TILE_OVERHEAD_BYTES, 0) / encode_pixel_bytes(net)))


def tile_bytes(net: Net, tile: int) -> float:
    """Bytes that encoding an LR tile of side `tile` needs (see `memory_plan`): the least work room for that tile."""
    return TILE_OVERHEAD_BYTES + encode_pixel_bytes(net) * tile ** 2


def memory_plan(net: Net, work_bytes: float, half: bool = False, tile: int = 0) -> tuple[int, int]:
    """(tile, chunk): the LR tile side (the given `tile`, else the largest that fits in `work_bytes`, at most
    `speed_tile`) and the query chunk whose peak memory fits in `work_bytes`.

    Encoding a t x t tile peaks at TILE_OVERHEAD_BYTES + ENCODE_PIXEL_BYTES * t^2 (the cross-scale attention is
    scored in bands, so nothing grows faster than the tile area). Decoding holds the overhead, the bank (about
    half of ENCODE_PIXEL_BYTES * t^2) and the chunk, which gets the rest (the net's runtime's `query_bytes` per
    query, CACHE_QUERIES queries to the runtime's `chunk`). Per-pixel terms scale with the encoder's width
    relative to 64 (approximate for RDN/SwinIR). MemoryError if the given `tile` does not fit, or without one, if
    the largest tile is below MIN_AUTO_TILE (`largest_tile` says which would fit).
    `half` (fp16/bf16 autocast) halves PyTorch's bytes per query only: autocast keeps enough of the encode in fp32
    that halving the tile terms overshot the budget.
    """
    device = next(net.parameters()).device
    encode = encode_pixel_bytes(net)
    room = max(work_bytes - TILE_OVERHEAD_BYTES, 0)
    fits = largest_tile(net, work_bytes)
    if fits < (tile or MIN_AUTO_TILE):
        raise MemoryError(f'{byte_size(work_bytes)} is too little room for a {tile or MIN_AUTO_TILE}-pixel '
                          f'tile (the largest that fits is {fits})')
    tile = tile or min(fits, speed_tile(net, device) or fits)
    chunk = int((room - encode / 2 * tile ** 2) / net.runtime.query_bytes(net, half))
    return tile, max(CACHE_QUERIES, min(net.runtime.chunk(device), chunk))


def _decode_grid(net: Net, bank: Any, rows: torch.Tensor, cols: torch.Tensor, cells: torch.Tensor, chunk: int,
                 on_chunk: Callable[[int], None]) -> torch.Tensor:
    """Decode the grid rows x cols (coordinates [n], [m]) in chunks -> [B, 3, n, m]; on_chunk(queries) after each.
    Within the `decoding()` context of the net's runtime."""
    batch, n, m = cells.shape[0], rows.numel(), cols.numel()
    out = cells.new_empty(batch, 3, n * m)
    with net.runtime.decoding():
        for start in range(0, n * m, chunk):
            flat = torch.arange(start, min(start + chunk, n * m), device=rows.device)
            coord = torch.stack([rows[flat // m], cols[flat % m]], -1).expand(batch, -1, -1)
            rgb = net.decode(bank, coord, cells[:, None, :].expand(-1, flat.numel(), -1))
            out[:, :, start:start + flat.numel()] = rgb.transpose(1, 2).float()
            on_chunk(flat.numel())
    return out.view(batch, 3, n, m)


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: every (tile - overlap) pixels, plus a last one flush with the end."""
    stride = max(1, tile - overlap)
    return list(range(0, length - tile, stride)) + [length - tile]


def fitted_side(length: int, tile: int, overlap: int, min_side: int = 1) -> int:
    """Side of 'smooth' tiles along an axis of `length` LR pixels: the smallest that needs no more tiles than tiles of
    side `tile` overlapping by `overlap` do (at least min_side, at most the axis). The largest tile that fits memory
    may leave a large overlap to encode twice: a 320-pixel axis in 241-pixel tiles takes two, overlapping by 162,
    where two tiles of 176 overlap by 32 (`real` at x4 on a 320 x 320 photo: 4 x 241^2 LR pixels encoded, against
    4 x 176^2 = 1.2 times the photo's)."""
    side = max(min(tile, length), min_side)
    if side >= length:
        return side
    overlap = min(overlap, side - 1)
    count = math.ceil((length - overlap) / (side - overlap))
    return max(math.ceil((length + (count - 1) * overlap) / count), min_side)


def axis_tiles(length: int, side: int, overlap: int, blend: str, max_band: float = math.inf) -> list[Tile]:
    """Tiles along one axis as (start, lo, hi, band), in LR pixels.

    The tile covers [start, start + side) and contributes the output pixels whose centres lie in
    [lo, hi), with a weight that ramps up over [lo, lo + band) and down over [hi - band, hi) where a
    neighbour takes over. 'uniform' (official): tiles every side - overlap pixels, the last one flush
    with the end, each contributing its whole area at weight 1. 'smooth': the fewest tiles whose
    overlaps are at least `overlap`, spread evenly; each contributes up to the middle of its overlaps
    plus half a band of overlap / 4 (at most `max_band`), so output pixels are decoded twice only in the bands
    and never within 3/8 overlap of an inner tile edge (a wider band measured no closer to the untiled output).
    """
    if blend == 'uniform':
        return [(start, start, start + side, 0) for start in tile_origins(length, side, overlap)]
    count = 1 if side >= length else math.ceil((length - overlap) / (side - overlap))
    starts = [round(k * (length - side) / (count - 1)) for k in range(count)] if count > 1 else [0]
    band = min(overlap / 4, max_band)
    seams = [(left + side + right) / 2 for left, right in zip(starts, starts[1:])]  # overlap middles
    los = [0] + [seam - band / 2 for seam in seams]
    his = [seam + band / 2 for seam in seams] + [length]
    return list(zip(starts, los, his, [band] * count))


def _axis_weights(positions: torch.Tensor, lo: float, hi: float, band: float, length: int) -> torch.Tensor:
    """Raised-cosine weights of output pixel centres (LR units) in [lo, hi): 1 inside, ramps of width
    `band` at lo > 0 and hi < length; neighbouring tiles' ramps sum to 1."""
    weight = torch.ones_like(positions)
    if band > 0:
        if lo > 0:
            weight = weight * (0.5 - 0.5 * torch.cos(math.pi * torch.clamp((positions - lo) / band, 0, 1)))
        if hi < length:
            weight = weight * (0.5 - 0.5 * torch.cos(math.pi * torch.clamp((hi - positions) / band, 0, 1)))
    return weight


def _spans(positions: torch.Tensor, tiles: list[Tile]) -> list[tuple[int, float, float, float, int, int]]:
    """Each tile of `axis_tiles` with the index range [first, last) of the sorted output pixel centres
    `positions` (LR units) that it contributes: (start, lo, hi, band, first, last)."""
    return [(start, lo, hi, band, *torch.searchsorted(positions, positions.new_tensor([lo, hi])).tolist())
            for start, lo, hi, band in tiles]


@torch.no_grad()
def super_resolve(net: Net, lr: torch.Tensor, scale: float | None = None, size: Sequence[int] | None = None,
                  chunk: int | None = None, tile: int = 0, tile_overlap: int | None = None, blend: str = 'smooth',
                  progress: Progress | None = None) -> torch.Tensor:
    """Super-resolve lr [B, 3, h, w] in [0, 1] to [B, 3, H, W] in [0, 1]: clamped, except that every value the
    network got wrong (NaN, or infinite from an overflow) comes out as NaN, never as a plausible 0 or 1.

    H, W = round(h * scale), round(w * scale), or `size` = (H, W). `chunk`: queries per decode call
    (default: the net's runtime's `chunk` on lr's device; results do not depend on it beyond
    float rounding: bit-identical with AVX-512 kernels, within 1e-6 with AVX2 kernels, whose products round by the
    number of rows). `tile` 0: no tiling;
    >= MIN_TILE: LR tile side with `tile_overlap` >= 0 LR pixels of overlap (at most the tile side less 1; None:
    `default_overlap`, a quarter of the tile, at most 32: the former fixed 32 made tiles of 32 or less start every
    pixel, ~1000 tiles for a 64-px image),
    blended with `blend` = 'smooth' (tiles of min(tile, h) x min(tile, w), see `axis_tiles`) or 'uniform'
    (official: square tiles of min(tile, h, w), averaged).
    Any size works, down to 1 x 1: an image smaller than `net.min_input_side` is replicate-padded around its
    centre to that side (the output pixel centres stay on the image's own area), and no tile is smaller.
    `progress(done, total)` is called after every decoded chunk with counts of decoded queries.
    Every argument is checked first (`check_arguments`, `output_size`): one TypeError or ValueError, naming it.
    """
    check_arguments(net, lr, chunk, tile, tile_overlap, progress)
    if blend not in ('smooth', 'uniform'):
        raise ValueError(f"blend must be 'smooth' or 'uniform', got {blend!r}")
    h, w = lr.shape[-2:]
    out_h, out_w = output_size((h, w), scale, size)
    chunk = int(chunk or net.runtime.chunk(lr.device))
    tile = int(tile)
    tile_overlap = default_overlap(tile) if tile_overlap is None else int(tile_overlap)
    rows, cols = axis_centres(out_h, lr.device), axis_centres(out_w, lr.device)
    # Output pixel centres in continuous LR pixel units (0 = left/top edge of the image).
    row_pos, col_pos = (rows + 1) / 2 * h, (cols + 1) / 2 * w
    cell_h, cell_w = 2 / out_h * h, 2 / out_w * w  # an output pixel in LR pixels, times 2
    min_side = net.min_input_side
    if h < min_side or w < min_side:
        pad_h, pad_w = max(min_side - h, 0), max(min_side - w, 0)
        top, left = pad_h // 2, pad_w // 2
        lr = F.pad(lr, (left, pad_w - left, top, pad_h - top), mode='replicate')
        row_pos, col_pos = row_pos + top, col_pos + left
        h, w = lr.shape[-2:]
        rows, cols = row_pos / h * 2 - 1, col_pos / w * 2 - 1  # the same centres in the padded image
    if blend == 'uniform' and tile:
        side_h = side_w = max(min(tile, h, w), min_side)
    else:
        side_h, side_w = (fitted_side(h, tile, tile_overlap, min_side),
                          fitted_side(w, tile, tile_overlap, min_side)) if tile else (h, w)
    # Cross-fade bands at most BAND_OUTPUT_PIXELS output pixels wide (in LR pixels: that many times h / out_h).
    row_spans = _spans(row_pos, axis_tiles(h, side_h, min(tile_overlap, side_h - 1), blend,
                                           BAND_OUTPUT_PIXELS * h / out_h))
    col_spans = _spans(col_pos, axis_tiles(w, side_w, min(tile_overlap, side_w - 1), blend,
                                           BAND_OUTPUT_PIXELS * w / out_w))
    total_queries = sum(r1 - r0 for *_, r0, r1 in row_spans) * sum(c1 - c0 for *_, c0, c1 in col_spans)
    done = 0

    def on_chunk(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total_queries)

    cells = lr.new_tensor([cell_h / side_h, cell_w / side_w]).expand(lr.shape[0], 2)
    if len(row_spans) == len(col_spans) == 1:
        return _clamp(_decode_grid(net, net.encode(lr, (out_h, out_w)), rows, cols, cells, chunk, on_chunk))

    out = lr.new_zeros(lr.shape[0], 3, out_h, out_w, dtype=torch.float32)
    total = lr.new_zeros(out_h, out_w, dtype=torch.float32)
    col_weights = [_axis_weights(col_pos[c0:c1], x_lo, x_hi, x_band, w) for _, x_lo, x_hi, x_band, c0, c1 in col_spans]
    for y, y_lo, y_hi, y_band, r0, r1 in row_spans:
        row_weight = _axis_weights(row_pos[r0:r1], y_lo, y_hi, y_band, h)
        for (x, _, _, _, c0, c1), col_weight in zip(col_spans, col_weights):
            if r0 == r1 or c0 == c1:
                continue
            bank = net.encode(lr[..., y:y + side_h, x:x + side_w], (r1 - r0, c1 - c0))
            local_rows = (row_pos[r0:r1] - y) / side_h * 2 - 1
            local_cols = (col_pos[c0:c1] - x) / side_w * 2 - 1
            pred = _decode_grid(net, bank, local_rows, local_cols, cells, chunk, on_chunk)
            del bank
            weight = row_weight[:, None] * col_weight[None, :]
            out[..., r0:r1, c0:c1] += pred.mul_(weight)
            total[r0:r1, c0:c1] += weight
    return _clamp(out.div_(total))


def _clamp(out: torch.Tensor) -> torch.Tensor:
    """out clamped to [0, 1] in place, with infinities turned into NaN first (clamping would hide them)."""
    return out.masked_fill_(out.isinf(), math.nan).clamp_(0, 1)
