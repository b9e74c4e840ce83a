"""LIIF (Chen et al., CVPR 2021) on the same encoders, as the paper's baseline for CiaoSR.

Each of the 4 LR latent codes around a query predicts RGB with one MLP from
[code, rel, cell]; the predictions are blended with the areas of the opposite sub-rectangles
(local ensemble). Input/output conventions are those of CiaoSR (mean-subtracted inside, RGB in
[0, 1] units out), so both archs train and evaluate with the same data, model and scripts. The options are read
back off a state_dict by `LIIF.options_from_state`.
"""
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import torch
from basicsr.utils.registry import ARCH_REGISTRY

from .coords import NEIGHBOUR_OFFSETS, neighbour_pixels
from .encoders import build_encoder
from .implicit_base import MLP, ImplicitSRNet, channels_last, gather_pixels, unfold3x3


class LIIFBank(TypedDict):
    """What `LIIF.encode` returns, once per image or tile, for `LIIF.decode`."""

    size: tuple[int, int]  # (h, w) of the feature map, the LR image's
    code_proj: torch.Tensor  # [B, hw, H1]: the MLP's first layer on each LR pixel's code, bias included


@ARCH_REGISTRY.register()
class LIIF(ImplicitSRNet[LIIFBank]):
    """LIIF generator.

    Args:
        encoder, encoder_opt: as in CiaoSR.
        local_ensemble: blend the 4 surrounding codes (else the nearest code only).
        feat_unfold: 3x3-unfolded codes (9C channels).
        cell_decode: give the MLP the output pixel size.
        hidden: hidden widths of `imnet`.
    """

    def __init__(self, encoder: str = 'edsr_baseline', encoder_opt: Mapping[str, Any] | None = None,
                 local_ensemble: bool = True, feat_unfold: bool = True, cell_decode: bool = True,
                 hidden: Sequence[int] = (256,) * 4):
        super().__init__()
        enc = build_encoder(encoder, **(encoder_opt or {}))
        code_dim = enc.out_channels * (9 if feat_unfold else 1)
        self.offsets = NEIGHBOUR_OFFSETS[2 if local_ensemble else 1]
        self.feat_unfold = feat_unfold
        self.cell_decode = cell_decode
        self.imnet = MLP(code_dim + (4 if cell_decode else 2), 3, hidden)
        self.attach_encoder(enc)

    @staticmethod
    def options_from_state(state: Mapping[str, torch.Tensor], channels: int) -> dict[str, Any] | None:
        """The head's options read off a state_dict whose encoder gives `channels` features (feature unfold, cell
        decode, hidden widths), or None when `state` holds no LIIF head (`imnet.*`)."""
        if not any(k.startswith('imnet.') for k in state):
            return None
        in_dim = state['imnet.layers.0.weight'].shape[1]
        feat_unfold = in_dim - 2 >= 9 * channels
        return {'feat_unfold': feat_unfold, 'cell_decode': in_dim - channels * (9 if feat_unfold else 1) == 4,
                'hidden': MLP.hidden_from_state(state, 'imnet')}

    def encode(self, lr: torch.Tensor, out_size: tuple[int, int] | None = None) -> LIIFBank:
        feat = self.encoder(lr - self.rgb_mean)
        h, w = feat.shape[-2:]
        codes = channels_last(unfold3x3(feat) if self.feat_unfold else feat)
        return {'size': (h, w), 'code_proj': self.imnet.project(codes)}

    def decode(self, bank: LIIFBank, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        h, w = bank['size']
        size = coord.new_tensor([h, w])
        index, rel = neighbour_pixels(coord, self.offsets, 1 / size.expand(coord.shape[0], 2), h, w)  # [B, Q, N, .]
        extra = torch.cat([rel, (cell * size).unsqueeze(2).expand_as(rel)], -1) if self.cell_decode else rel
        preds = self.imnet.head(self.imnet.hidden(gather_pixels(bank['code_proj'], index), extra))  # [B, Q, N, 3]
        # Each code is weighted by the area of the sub-rectangle diagonally opposite to it (offsets reversed).
        weights = ((rel[..., 0] * rel[..., 1]).abs() + 1e-9).flip(-1)
        rgb = (preds * (weights / weights.sum(-1, keepdim=True)).unsqueeze(-1)).sum(-2)
        return rgb + self.rgb_mean.view(1, 1, 3)
