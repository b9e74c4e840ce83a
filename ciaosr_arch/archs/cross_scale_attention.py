"""CiaoSR's non-local branch: cross-scale attention over the LR feature map (as the official CiaoSR code)."""
import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_GROUP = 16  # channels pasted back per matrix product: [hw, 16 * 9s^2] floats at a time, not [hw, C * 9s^2]


def _conv1x1_prelu(in_channels, out_channels):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.PReLU())


class CrossScaleAttention(nn.Module):
    """Every feature position attends to all positions of an s-times down-scaled copy of the map
    and gathers their (3s x 3s) full-resolution patches, so texture that recurs at a coarser scale
    in the same image is transferred back (Cross-Scale Non-Local attention of CSNLN).

    The internal factor s (`scales`, default (2,)) is fixed and independent of the SR scale.
    Outputs of all factors are concatenated: [B, C, h, w] -> [B, C * len(scales), h, w].
    Time and memory are quadratic in h * w (score map [h*w / s^2, h*w]): tile large images.
    """

    def __init__(self, channels=64, scales=(2,), reduction=2, softmax_scale=10.0):
        super().__init__()
        self.scales = tuple(scales)
        self.softmax_scale = softmax_scale
        self.register_buffer('escape_NaN', torch.tensor([1e-4]))  # norm floor; persistent, as in official files
        self.conv_match_1 = _conv1x1_prelu(channels, channels // reduction)  # query side, full resolution
        self.conv_match_2 = _conv1x1_prelu(channels, channels // reduction)  # key side, down-scaled
        self.conv_assembly = _conv1x1_prelu(channels, channels)  # value side, full resolution
        for s in self.scales:
            self.add_module(self.down_name(s), nn.Conv2d(channels, channels, 3, stride=s, padding=1))

    @staticmethod
    def down_name(scale):
        """Official name of the strided conv for factor `scale`: `down` for 2, else `downx{scale}`."""
        return 'down' if scale == 2 else f'downx{scale}'

    def forward(self, feat):
        return torch.cat([self.attend(feat, s) for s in self.scales], 1)

    def attend(self, feat, s):
        """Cross-scale attention with factor s: [B, C, h, w] -> [B, C, h, w].

        The official code correlates with a conv2d and reconstructs with a conv_transpose2d per image;
        the same sums are done here as two batched matrix products and a fold (col2im), which is
        several times faster on CPU.
        """
        b, _, h, w = feat.shape
        feat = F.pad(feat, (0, -w % s, 0, -h % s), mode='reflect')
        hp, wp = feat.shape[-2:]
        values = self.conv_assembly(feat)
        keys = self.conv_match_2(F.interpolate(feat, size=(hp // s, wp // s), mode='bilinear', align_corners=False))

        # One 3x3 matching filter per down-scaled position (L of them), L2-normalised over channels and window.
        filters = F.unfold(keys, 3, padding=1)  # [B, C/2 * 9, L]
        filters = filters / filters.norm(dim=1, keepdim=True).clamp_min(self.escape_NaN)
        queries = F.unfold(self.conv_match_1(feat), 3, padding=1)  # [B, C/2 * 9, hp * wp]
        # Scores [B, L, hp*wp]: laid out as the paste-back product below reads them (no transposed copy).
        weights = (filters.transpose(1, 2) @ queries).mul_(self.softmax_scale)  # the big one
        if weights.requires_grad:  # training: autograd needs softmax's output untouched
            weights = weights.softmax(1)
        else:  # inference: softmax over the L down-scaled positions in place, no second copy of the scores
            weights = weights.sub_(weights.amax(1, keepdim=True)).exp_()
            weights = weights.div_(weights.sum(1, keepdim=True))
        # The (3s x 3s) full-resolution patch that each down-scaled position stands for, pasted back with
        # those weights at stride s (a transposed convolution): [B, C, s*hp, s*wp]. Channel groups of
        # ATTENTION_GROUP keep the pasted columns (as large as the score map for all C) small.
        patches = F.unfold(values, 3 * s, stride=s, padding=s).view(b, values.shape[1], -1, weights.shape[1])
        out = torch.cat([F.fold(group.flatten(1, 2) @ weights, (s * hp, s * wp), 3 * s, stride=s,
                                padding=s)  # columns [B, group * 9s^2, hp*wp] made in the layout fold reads
                         for group in patches.split(ATTENTION_GROUP, 1)], 1)
        out = getattr(self, self.down_name(s))(out) / 6
        return out[..., :h, :w]
