"""Coordinates of the implicit SR heads, all in one place.

Convention (official CiaoSR/LIIF): an image of n1 x n2 pixels spans [-1, 1] on both axes, pixel
centres sit at -1 + (2k + 1) / n, and every coordinate tensor has its last dimension ordered
(row, col). Only `grid_sample` wants (x, y), so the flip happens in `sample_nearest_index` and
`sample_bilinear` and nowhere else (`sample_lanczos` reads rows and columns itself).
"""
import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

EPS_SHIFT = 1e-6  # nudge of shifted neighbour coordinates, and the clamp margin at the border
NEIGHBOUR_OFFSETS = {1: [(0, 0)], 2: list(itertools.product((-1, 1), repeat=2)),
                     3: list(itertools.product((-1, 0, 1), repeat=2))}  # local_size -> (row, col) offsets


def axis_centres(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Pixel-centre coordinates of one axis of length n, float32 [n] (bit-identical to official)."""
    r = 1 / n
    return (-1 + r) + (2 * r) * torch.arange(n, device=device, dtype=torch.float32)


def make_coord(shape: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """Pixel-centre coordinates of an (n1, n2) grid, flattened row-major: float32 [n1 * n2, 2]."""
    rows, cols = (axis_centres(n, device) for n in shape)
    return torch.stack(torch.meshgrid(rows, cols, indexing='ij'), dim=-1).view(-1, 2)


def make_cell(size: Sequence[int], n_query: int, batch: int = 1,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Size of one output pixel in the same units, (2 / H, 2 / W) for every query: [B, Q, 2]."""
    cell = torch.ones(batch, n_query, 2, device=device)
    cell[..., 0] *= 2 / size[0]
    cell[..., 1] *= 2 / size[1]
    return cell


def sample_nearest_index(coord: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Flat index (row * width + col) of the LR pixel that nearest `grid_sample` picks at each coord.

    The index map is sampled through `grid_sample` itself, so ties round exactly as in the
    official code on every device (CPU and CUDA unnormalise coordinates differently).
    coord: [B, Q, 2] in (row, col) order -> long [B, Q].
    """
    if height * width > 2 ** 24:
        raise ValueError(f'feature map {height}x{width} too large for exact float32 indices; tile the image')
    index_map = torch.arange(height * width, device=coord.device, dtype=torch.float32).view(1, 1, height, width)
    grid = coord.flip(-1).unsqueeze(1).float()  # [B, 1, Q, 2] in (x, y)
    index = F.grid_sample(index_map.expand(coord.shape[0], -1, -1, -1), grid, mode='nearest', align_corners=False)
    return index[:, 0, 0, :].long()


def pixel_centres(index: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Coordinates [B, Q, 2] of the LR pixel centres with the given flat indices."""
    rows = axis_centres(height, index.device)[index // width]
    cols = axis_centres(width, index.device)[index % width]
    return torch.stack([rows, cols], dim=-1)


def shift_coord(coord: torch.Tensor, offset: tuple[int, int], shift: torch.Tensor) -> torch.Tensor:
    """Move queries by offset (a, b) in {-1, 0, 1}^2 LR steps of `shift` [B, 2], as the official heads do.

    A non-zero offset moves its axis by offset * shift + 1e-6 (the nudge is added for both signs);
    the result is clamped to [-1 + 1e-6, 1 - 1e-6]. coord: [B, Q, 2] -> [B, Q, 2].
    """
    moved = coord.clone()
    for axis, step in enumerate(offset):
        if step != 0:
            moved[..., axis] += (step * shift[:, axis] + EPS_SHIFT)[:, None]
    return moved.clamp_(-1 + EPS_SHIFT, 1 - EPS_SHIFT)


def neighbour_pixels(coord: torch.Tensor, offsets: Sequence[tuple[int, int]], shift: torch.Tensor, height: int,
                     width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The LR pixels each query reads and the query's position relative to their centres (the heads' shared loop).

    coord [B, Q, 2]; offsets: (row, col) steps in {-1, 0, 1} (`NEIGHBOUR_OFFSETS`); shift [B, 2]: one step in
    [-1, 1] units (CiaoSR: (1 - cell) / (size - 1); LIIF: 1 / size). Returns flat indices [B, Q, N] of the pixels
    nearest to each shifted query and rel [B, Q, N, 2] = query - pixel centre, in LR pixels.
    """
    size = coord.new_tensor([height, width])
    index, rel = [], []
    for offset in offsets:
        nearest = sample_nearest_index(shift_coord(coord, offset, shift), height, width)
        index.append(nearest)
        rel.append((coord - pixel_centres(nearest, height, width)) * size)
    return torch.stack(index, 2), torch.stack(rel, 2)


def switch_probes(batch: int, count: int, height: int, width: int, delta: float,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Quadruples of queries straddling the lines where a head's inputs switch from one LR pixel to the next.

    The 2x2 neighbour set of CiaoSR/LIIF switches where a query crosses an LR pixel centre, the nearest pixel (the
    query feature, and LIIF's single neighbour) where it crosses an LR pixel edge; nothing in the learned
    attention weights makes the output continuous there. Each probe picks a row or a column line at a random
    interior centre or edge (at least one pixel from the border) and a random position along it, and places four
    queries across it at -3, -1, 1 and 3 x `delta` LR pixels. Returns coord [B, count * 4, 2] (quadruples
    consecutive), in the [-1, 1] frame of an LR image of height x width pixels (both >= 3).
    """
    size = torch.tensor([height, width], dtype=torch.float32, device=device)
    axis = torch.randint(0, 2, (batch, count), device=device)
    line = 1 + (torch.rand(batch, count, device=device) * (size[axis] - 2)).floor()  # 1 .. size - 2
    across = line + 0.5 * torch.randint(0, 2, (batch, count), device=device)  # an edge or a centre
    along = 0.5 + torch.rand(batch, count, device=device) * (size[1 - axis] - 1)
    steps = torch.tensor([-3.0, -1.0, 1.0, 3.0], device=device) * delta
    pos = torch.empty(batch, count, 4, 2, device=device)
    pos.scatter_(-1, axis.view(batch, count, 1, 1).expand(-1, -1, 4, 1),
                 (across.unsqueeze(-1) + steps).unsqueeze(-1))
    pos.scatter_(-1, (1 - axis).view(batch, count, 1, 1).expand(-1, -1, 4, 1),
                 along.view(batch, count, 1, 1).expand(-1, -1, 4, 1))
    return (pos / size * 2 - 1).view(batch, count * 4, 2)


def sample_bilinear(image: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of image [B, C, h, w] at coord [B, Q, 2] (border padding) -> [B, Q, C] in the image's dtype; a
    pixel's value exactly at its centre. Sampled in the wider of the two dtypes (a bf16 image at float32 coordinates:
    in float32)."""
    dtype = torch.promote_types(image.dtype, coord.dtype)
    grid = coord.flip(-1).unsqueeze(1).to(dtype)
    sampled = F.grid_sample(image.to(dtype), grid, mode='bilinear', padding_mode='border', align_corners=False)
    return sampled[:, :, 0].transpose(1, 2).to(image.dtype)


LANCZOS_LOBES = 4  # 8 taps per axis, as OpenCV's INTER_LANCZOS4 (Real-ESRGAN's `--outscale` resize)


def lanczos_taps(coord: torch.Tensor, n: int, lobes: int = LANCZOS_LOBES) -> tuple[torch.Tensor, torch.Tensor]:
    """The first of the 2 * lobes pixels around each coordinate on an axis of n pixels, and their Lanczos weights
    sinc(d) sinc(d / lobes) at distance d (in pixels), normalised to sum 1 as OpenCV does.

    coord: [...] in the [-1, 1] frame (clamped to it). Returns the first tap's index,
    int64 [...], between -lobes and n - lobes (the axis must be extended by `lobes` pixels on each side), and
    the weights [..., 2 * lobes] in coord's dtype.
    """
    position = ((coord + 1) * (n / 2) - 0.5).clamp(-0.5, n - 0.5)  # pixel k's centre at k
    first = position.floor() + (1 - lobes)
    distance = (position - first).unsqueeze(-1) - torch.arange(2 * lobes, device=coord.device)
    weights = torch.sinc(distance) * torch.sinc(distance / lobes)
    return first.long(), weights / weights.sum(-1, keepdim=True)


def lanczos_source(image: torch.Tensor, lobes: int = LANCZOS_LOBES) -> torch.Tensor:
    """image [B, C, h, w] as `sample_lanczos` reads it: border-replicated by `lobes` pixels per side, channels last,
    contiguous -> [B, h + 2 * lobes, w + 2 * lobes, C]. Made once per image (a bank holds it), not per call."""
    return F.pad(image, (lobes, lobes, lobes, lobes), mode='replicate').permute(0, 2, 3, 1).contiguous()


def sample_lanczos(source: torch.Tensor, coord: torch.Tensor, lobes: int = LANCZOS_LOBES) -> torch.Tensor:
    """Lanczos sample at coord [B, Q, 2] of an image given as its `lanczos_source` [B, h + 2 * lobes, w + 2 * lobes,
    C] (border replicated, by the same `lobes`) -> [B, Q, C]: a pixel's value at its centre (to float rounding),
    and OpenCV's `resize(..., INTER_LANCZOS4)` on a regular up-scaling grid.

    Bicubic sampling of an x4 image at x8 alternates sharp and soft output pixels in step with the x4 pixels
    (LR-grid index 0.14 on Real-ESRGAN x4plus outputs of RealSRSet photos); this 4-lobe kernel does not (0.04).
    Each query reads 2 * lobes runs of 2 * lobes pixels that lie side by side in the source, one gather per run;
    memory: 2 x [B, Q, 2 * lobes, C]. Differentiable in the source (dense gradients: slow, unused while the base
    is frozen).
    """
    source = source.contiguous()  # the runs below are strides of its memory (a no-op for `lanczos_source`)
    b, hp, wp, c = source.shape
    taps = 2 * lobes
    first_row, row_weights = lanczos_taps(coord[..., 0], hp - taps, lobes)  # [B, Q], [B, Q, T]
    first_col, col_weights = lanczos_taps(coord[..., 1], wp - taps, lobes)
    # run k = the taps pixels starting at flat pixel k of the padded batch: overlapping rows of one buffer
    runs = source.as_strided((b * hp * wp - taps + 1, taps * c), (c, 1))
    start = (first_row + lobes) * wp + first_col + lobes + torch.arange(0, b * hp * wp, hp * wp,
                                                                        device=source.device).view(b, 1)
    columns = source.new_zeros(b, coord.shape[1], taps * c,  # the rows' weighted sum, per column tap
                               dtype=torch.promote_types(source.dtype, row_weights.dtype))
    for tap in range(taps):
        run = runs.index_select(0, (start + tap * wp).flatten()).view(b, -1, taps * c)
        columns.addcmul_(run, row_weights[..., tap:tap + 1])
    return (columns.view(b, -1, taps, c) * col_weights.unsqueeze(-1)).sum(-2)
