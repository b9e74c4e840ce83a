"""CiaoSR's non-local branch: cross-scale attention over the LR feature map (as the official CiaoSR code)."""
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..runtimes.base import DecodeRuntime, TorchRuntime

ATTENTION_BAND = 4096  # query positions scored at once: the score map is held [L, ~4096] at a time, not [L, h*w]


def _conv1x1_prelu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.PReLU())


class CrossScaleAttention(nn.Module):
    """Every feature position attends to all positions of an s-times down-scaled copy of the map
    and gathers their (3s x 3s) full-resolution patches, so texture that recurs at a coarser scale
    in the same image is transferred back (Cross-Scale Non-Local attention of CSNLN).

    The internal factor s (`scales`, default (2,)) is fixed and independent of the SR scale.
    Outputs of all factors are concatenated: [B, C, h, w] -> [B, C * len(scales), h, w].
    Time is quadratic in h * w (scores [h*w / s^2, h*w]): tile large images. The scores are made and used one
    band of ATTENTION_BAND query positions at a time, so memory grows with h * w (times L = h*w / s^2) only.
    """

    escape_NaN: torch.Tensor  # a buffer (`register_buffer`)

    def __init__(self, channels: int = 64, scales: Sequence[int] = (2,), reduction: int = 2,
                 softmax_scale: float = 10.0):
        super().__init__()
        self.runtime: DecodeRuntime = TorchRuntime()  # what runs `paste` (`ciaosr_arch.runtimes`; not a module)
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

        The official code correlates with a conv2d and reconstructs with a conv_transpose2d per image;
        the same sums are done here as two batched matrix products and a fold (col2im) per band of query rows
        (`paste`), which is several times faster on CPU.
        """
        b, _, h, w = feat.shape
        feat = F.pad(feat, (0, -w % s, 0, -h % s), mode='reflect')
        hp, wp = feat.shape[-2:]
        values = self.conv_assembly(feat)
        keys = self.conv_match_2(F.interpolate(feat, size=(hp // s, wp // s), mode='bilinear', align_corners=False))

        # One 3x3 matching filter per down-scaled position (L of them), L2-normalised over channels and window.
        filters = F.unfold(keys, 3, padding=1)  # [B, C/2 * 9, L]
        filters = (filters / filters.norm(dim=1, keepdim=True).clamp_min(self.escape_NaN)).transpose(1, 2)
        queries = F.unfold(self.conv_match_1(feat), 3, padding=1)  # [B, C/2 * 9, hp * wp]
        # The (3s x 3s) full-resolution patch that each down-scaled position stands for: [B, C * 9s^2, L].
        patches = F.unfold(values, 3 * s, stride=s, padding=s)
        # Pasted back with the attention weights at stride s (a transposed convolution) into [B, C, s*hp, s*wp],
        # one band of query rows at a time: the columns of rows [top, bottom) fold into output rows
        # s * (top - 1) to s * (bottom + 1), added into a buffer with s rows of margin above and below.
        rows = max(1, ATTENTION_BAND // wp)
        out = values.new_zeros(b, values.shape[1], s * (hp + 2), s * wp)
        for top in range(0, hp, rows):
            bottom = min(hp, top + rows)
            columns = self.runtime.paste(self, filters, queries[..., top * wp:bottom * wp], patches)
            out[..., s * top:s * (bottom + 2), :] += F.fold(
                columns, (s * (bottom - top + 2), s * wp), 3 * s, stride=s, padding=(0, s))
        out = getattr(self, self.down_name(s))(out[..., s:-s, :]) / 6
        return out[..., :h, :w]

    def paste(self, filters: torch.Tensor, queries: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Pasted columns [B, C * 9s^2, P] of P query positions: the softmax over the L down-scaled positions of
        the queries' scores (3x3-unfolded matching features queries [B, C/2 * 9, P] against filters
        [B, L, C/2 * 9], times softmax_scale), as weights of the patches [B, C * 9s^2, L]."""
        weights = (filters @ queries).mul_(self.softmax_scale)  # [B, L, P]: laid out as the product below reads it
        if weights.requires_grad:  # training: autograd needs softmax's output untouched
            weights = weights.softmax(1)
        else:  # inference: softmax over the L down-scaled positions in place, no second copy of the scores
            weights = weights.sub_(weights.amax(1, keepdim=True)).exp_()
            weights = weights.div_(weights.sum(1, keepdim=True))
        return patches @ weights
