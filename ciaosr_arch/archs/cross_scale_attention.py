"""CiaoSR's non-local branch: cross-scale attention over the LR feature map (spec section 3.4)."""
import torch
import torch.nn.functional as F
from torch import nn


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
        """Cross-scale attention with factor s: [B, C, h, w] -> [B, C, h, w]."""
        b, _, h, w = feat.shape
        feat = F.pad(feat, (0, -w % s, 0, -h % s), mode='reflect')
        hp, wp = feat.shape[-2:]
        values = self.conv_assembly(feat)
        queries = self.conv_match_1(feat)
        keys = self.conv_match_2(F.interpolate(feat, size=(hp // s, wp // s), mode='bilinear', align_corners=False))

        # One 3x3 matching filter per down-scaled position, L2-normalised over channels and window.
        filters = F.unfold(keys, 3, padding=1).transpose(1, 2)  # [B, L, C/2 * 9]
        filters = filters / filters.norm(dim=2, keepdim=True).clamp_min(self.escape_NaN)
        filters = filters.reshape(b, -1, keys.shape[1], 3, 3)
        # The (3s x 3s) full-resolution patch that each down-scaled position stands for.
        patches = F.unfold(values, 3 * s, stride=s, padding=s).transpose(1, 2)  # [B, L, C * 9s^2]
        patches = patches.reshape(b, -1, values.shape[1], 3 * s, 3 * s)

        out = []
        for i in range(b):
            scores = F.conv2d(queries[i:i + 1], filters[i], padding=1)  # [1, L, hp, wp]
            scores = F.softmax(scores * self.softmax_scale, dim=1)
            out.append(F.conv_transpose2d(scores, patches[i], stride=s, padding=s))  # [1, C, s*hp, s*wp]
        out = getattr(self, self.down_name(s))(torch.cat(out)) / 6
        return out[..., :h, :w]
