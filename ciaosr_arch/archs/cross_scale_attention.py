"""CiaoSR's non-local branch: cross-scale attention over the LR feature map (as the official CiaoSR code)."""
import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..runtimes.base import DecodeRuntime, TorchRuntime

ATTENTION_BAND = 4096  # query positions scored at once: the score map is held [L, ~4096] at a time, not [L, h*w]
SHIFTS = (-1, 0, 1, 2)  # the shifts r between a query's position and the output positions its pasted patch reaches


def _conv1x1_prelu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.PReLU())


class CrossScaleAttention(nn.Module):
    """Every feature position attends to all positions of an s-times down-scaled copy of the map
    and gathers their (3s x 3s) full-resolution patches, so texture that recurs at a coarser scale
    in the same image is transferred back (Cross-Scale Non-Local attention of CSNLN).

    The internal factor s (`scales`, integers >= 2, default (2,)) is fixed and independent of the SR scale.
    Outputs of all factors are concatenated: [B, C, h, w] -> [B, C * len(scales), h, w].
    Time is quadratic in h * w (scores [h*w / s^2, h*w]): tile large images. The scores are made and used one
    band of ATTENTION_BAND query positions at a time, so memory grows with h * w (times L = h*w / s^2) only.
    """

    escape_NaN: torch.Tensor  # a buffer (`register_buffer`)

    def __init__(self, channels: int = 64, scales: Sequence[int] = (2,), reduction: int = 2,
                 softmax_scale: float = 10.0):
        super().__init__()
        self.runtime: DecodeRuntime = TorchRuntime()  # what runs `paste` (`ciaosr_arch.runtimes`; not a module)
        if any(s < 2 for s in scales):
            raise ValueError(f'the cross-scale attention\'s factors must be integers >= 2, got {tuple(scales)}')
        self.scales = tuple(scales)
        self.softmax_scale = softmax_scale
        self.register_buffer('escape_NaN', torch.tensor([1e-4]))  # norm floor; persistent, as in official files
        self.conv_match_1 = _conv1x1_prelu(channels, channels // reduction)  # query side, full resolution
        self.conv_match_2 = _conv1x1_prelu(channels, channels // reduction)  # key side, down-scaled
        self.conv_assembly = _conv1x1_prelu(channels, channels)  # value side, full resolution
        for s in self.scales:
            self.add_module(self.down_name(s), nn.Conv2d(channels, channels, 3, stride=s, padding=1))

    @staticmethod
    def down_name(scale: int) -> str:
        """Official name of the strided conv for factor `scale`: `down` for 2, else `downx{scale}`."""
        return 'down' if scale == 2 else f'downx{scale}'

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.attend(feat, s) for s in self.scales], 1)

    def attend(self, feat: torch.Tensor, s: int) -> torch.Tensor:
        """Cross-scale attention with factor s: [B, C, h, w] -> [B, C, h, w].

        The official code correlates with a conv2d, pastes the weighted (3s x 3s) patches back with a conv_transpose2d
        at s times the resolution and brings that down with the strided 3x3 conv `down`, per image. All three are
        linear in the patches, so the same sums are done here in another order (`paste_sources`): `down`'s taps are
        applied to the patches' pixels first, which leaves 16 C-vectors per down-scaled position instead of 9 s^2,
        one per shift r (-1..2 on each axis) between a query's position and the output position it reaches; then a
        batched matrix product with the attention weights and a fold (col2im, 4 x 4, stride 1) per band of query
        rows. Products: 16 C instead of 9 s^2 C per (query, down-scaled position) pair, 2.25 times fewer at s = 2.
        The official paste-back drops what lands above or left of the map (its first row and column of pixels at
        s times the resolution, which `down` reads at the top and left border); those terms are taken out again for
        the queries of the first row and column (`paste_sources` with `first_row`, `first_col`).
        """
        b, c, h, w = feat.shape
        feat = F.pad(feat, (0, -w % s, 0, -h % s), mode='reflect')
        hp, wp = feat.shape[-2:]
        values = self.conv_assembly(feat)
        keys = self.conv_match_2(F.interpolate(feat, size=(hp // s, wp // s), mode='bilinear', align_corners=False))

        # One 3x3 matching filter per down-scaled position (L of them), L2-normalised over channels and window.
        filters = F.unfold(keys, 3, padding=1)  # [B, C/2 * 9, L]
        filters = (filters / filters.norm(dim=1, keepdim=True).clamp_min(self.escape_NaN)).transpose(1, 2)
        queries = F.unfold(self.conv_match_1(feat), 3, padding=1)  # [B, C/2 * 9, hp * wp]
        down = getattr(self, self.down_name(s))
        # down's 9 taps on every pixel, zero-padded by s: [B, 3, 3, C, hp + 2s, wp + 2s]
        taps = F.conv2d(values, down.weight.permute(2, 3, 0, 1).reshape(9 * c, c, 1, 1), padding=s)
        taps = taps.view(b, 3, 3, c, hp + 2 * s, wp + 2 * s)
        sources = paste_sources(taps, s).to(values.dtype)  # [B, C * 16, L]
        first_col = paste_sources(taps, s, first_col=True).to(values.dtype)  # [B, C * 4, L]
        first_row = paste_sources(taps, s, first_row=True)  # [B, C * 4, L]
        corner = paste_sources(taps, s, first_row=True, first_col=True)  # [B, C, L]
        first_row = torch.cat([first_row, corner], 1).to(values.dtype)
        # One band of query rows at a time: output row y gets the shift r = y - (query row), so rows [top, bottom)
        # fold into rows top - 1 to bottom + 1, added into a buffer with 1 row of margin above and 2 below.
        rows = max(1, ATTENTION_BAND // wp)
        out = values.new_zeros(b, c, hp + 3, wp + 1)
        for top in range(0, hp, rows):
            bottom = min(hp, top + rows)
            band = queries[..., top * wp:bottom * wp]
            shifted = self.runtime.paste(self, filters, band, sources).view(b, c, 4, 4, bottom - top, wp)
            # What the official crop drops (shift 0 on that axis, `down`'s first tap): queries of column 0 ...
            # (few queries: in PyTorch, so that a runtime compiles no more shapes than one per band size)
            shifted[:, :, :, 1, :, 0] -= self.paste(filters, band[..., ::wp], first_col).view(b, c, 4, bottom - top)
            if top == 0:  # ... and of row 0, without dropping the corner's term twice
                edge = self.paste(filters, band[..., :wp], first_row)
                shifted[:, :, 1, :, 0, :] -= edge[:, :4 * c].view(b, c, 4, wp)
                shifted[:, :, 1, 1, 0, 0] += edge[:, 4 * c:, 0]
            out[..., top:bottom + 3, :] += F.fold(shifted.reshape(b, c * 16, -1), (bottom - top + 3, wp + 1), 4,
                                                  padding=(0, 1))
        out = (out[..., 1:hp + 1, :wp] + down.bias.view(1, -1, 1, 1)) / 6  # bias in fp32 under autocast, as a conv's
        return out[..., :h, :w].to(values.dtype)

    def paste(self, filters: torch.Tensor, queries: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """Pasted columns [B, M, P] of P query positions: the softmax over the L down-scaled positions of the
        queries' scores (3x3-unfolded matching features queries [B, C/2 * 9, P] against filters [B, L, C/2 * 9],
        times softmax_scale), as weights of what each down-scaled position pastes, sources [B, M, L]
        (`paste_sources`: M = 16 C)."""
        weights = (filters @ queries).mul_(self.softmax_scale)  # [B, L, P]: laid out as the product below reads it
        if weights.requires_grad:  # training: autograd needs softmax's output untouched
            weights = weights.softmax(1)
        else:  # inference: softmax over the L down-scaled positions in place, no second copy of the scores
            weights = weights.sub_(weights.amax(1, keepdim=True)).exp_()
            # summed in fp32: in fp16 (a .half() model) 65536 positions (a 512 tile) could pass its largest, 65504
            weights = weights.div_(weights.sum(1, keepdim=True, dtype=torch.float32))
        return sources @ weights


def paste_sources(taps: torch.Tensor, s: int, first_row: bool = False, first_col: bool = False) -> torch.Tensor:
    """What each down-scaled position l gives, per shift r, to the output of `CrossScaleAttention.attend`.

    A query at position q (of the feature map) pastes the (3s x 3s) patch of l, values[s l + o - s] for o in
    [0, 3s), at the s-times finer positions s q + o - s; `down` (3x3, stride s, padding 1) reads position
    s q' + a - 1 with its tap a for output q'. So the pixel that reaches output q' = q + r through tap a is
    values[s l + s r + a - 1], wherever o = s (r + 1) + a - 1 lies in [0, 3s): r in SHIFTS on each axis (s >= 2).
    taps [B, 3, 3, C, hp + 2s, wp + 2s]: tap (ay, ax) of `down`'s weight applied to every pixel of the values
    [B, C, hp, wp], zero-padded by s. Returns [B, C * 16, L] (rows c * 16 + (ry + 1) * 4 + rx + 1), the sums over
    the taps of each shift, in fp32 at least. `first_row` / `first_col`: only shift 0 and tap 0 on that axis, the
    terms that the official paste-back crops for queries of the map's first row / column ([B, C * 4, L], or [B, C, L]
    for both).
    """
    b, _, _, c, height, width = taps.shape
    rows, cols = height // s - 2, width // s - 2
    shifts_y, shifts_x = ([0] if first_row else SHIFTS), ([0] if first_col else SHIFTS)
    sums = taps.new_zeros(b, c, len(shifts_y), len(shifts_x), rows, cols,
                          dtype=torch.promote_types(taps.dtype, torch.float32))  # fp32 at least (under autocast too)
    for (i, ry), (j, rx) in itertools.product(enumerate(shifts_y), enumerate(shifts_x)):
        for ay, ax in itertools.product(_taps(s, ry, first_row), _taps(s, rx, first_col)):
            y, x = s * (ry + 1) + ay - 1, s * (rx + 1) + ax - 1  # in the padded map
            sums[:, :, i, j] += taps[:, ay, ax, :, y:y + s * rows:s, x:x + s * cols:s]
    return sums.view(b, -1, rows * cols)


def _taps(s: int, shift: int, first: bool) -> list[int]:
    """`down`'s taps a (0..2) on one axis through which shift r reaches an output: 0 <= s (r + 1) + a - 1 < 3s."""
    return [0] if first else [a for a in range(3) if 0 <= s * (shift + 1) + a - 1 < 3 * s]
