"""CiaoSR: continuous implicit attention-in-attention network (Cao et al., CVPR 2023).

For each query point, the head attends over the LR latent codes around it (the inner attention):
  query  q   = unfolded feature of the nearest LR pixel (no embedding, as in the official code)
  keys   k_i = u_i * key_net([u_i, rel_i, cell])          (u_i: unfolded feature of neighbour i)
  values v_i = [u_i, n_i] * value_net([u_i, n_i, rel_i, cell])   (n_i: cross-scale non-local feature)
  rgb = decoder(sum_i softmax_i(<q, k_i> / softmax_scale) v_i) + skip(query)
with skip = bilinear(LR) (official). An encoder with an up-sampling tail (`rrdb` with `upsampler=True`) gives a base
image instead, its x4 output, sampled with a 4-lobe Lanczos kernel (`coords.sample_lanczos`): the head then
learns a residual over that network's result.
The non-local feature n comes from the scale-aware cross-scale attention over the whole map (the
outer attention). Module names are the official ones (imnet_q is the decoder, imnet_k the key net,
imnet_v the value net, cs_attn the cross-scale attention), so official checkpoints load as they are; the head's
options are read back off a state_dict (`CiaoSR.options_from_state`), and `without_non_local` removes the non-local
branch from a state_dict.
"""
import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from .coords import (
    NEIGHBOUR_OFFSETS,
    lanczos_source,
    neighbour_pixels,
    sample_bilinear,
    sample_lanczos,
    sample_nearest_index,
)
from .cross_scale_attention import CrossScaleAttention
from .encoders import RRDBEncoder, build_encoder
from .implicit_base import MLP, ImplicitSRNet, channels_last, count_indices, gather_pixels, unfold3x3

PAIR_TABLE_MIN_RATIO = 4  # output pixels per LR pixel from which the key/query pair table pays off
PAIR_TABLE_BAND_PIXELS = 4096  # LR pixels per band of the pair table's construction (bounds its temporaries)


class AttendTables(TypedDict):
    """The per-LR-pixel tables of a bank that `CiaoSR.attend` reads (what a runtime's `attend` is given), one row
    per LR pixel p = y * w + x: K = 9C with feature unfold (else C) channels, D = K + C * len(multi_scale) with the
    non-local branch (else K), H1 the first hidden width of the key / value net, H the key net's last one. The pair
    table is there (both entries) when the output has >= PAIR_TABLE_MIN_RATIO queries per LR pixel."""

    unfolded: torch.Tensor  # [B, hw, K]: the unfolded features u, a view of the first K channels of `values`
    values: torch.Tensor  # [B, hw, D]: [u, n], with n the cross-scale attention's features
    key_proj: torch.Tensor  # [B, hw, H1]: the key net's first layer on u, bias included (`MLP.project`)
    value_proj: torch.Tensor  # [B, hw, H1]: the value net's first layer on [u, n]
    pair_key: NotRequired[torch.Tensor]  # [B, hw * 9, H], row p * 9 + d: `CiaoSR.pair_table`
    pair_bias: NotRequired[torch.Tensor]  # [B, hw * 9]


class CiaoSRBank(AttendTables):
    """What `CiaoSR.encode` returns, once per image or tile, for `CiaoSR.decode`: the tables of `AttendTables` and
    what `query_layout` reads."""

    skip: torch.Tensor  # mean-subtracted RGB the residual is added to: the LR image [B, 3, h, w], or the encoder's
    # base image (`rrdb` with `upsampler=True`) as its `lanczos_source` [B, 4h + 2 lobes, 4w + 2 lobes, 3]
    size: tuple[int, int]  # (h, w) of the feature map, the LR image's


@ARCH_REGISTRY.register()
class CiaoSR(ImplicitSRNet[CiaoSRBank]):
    """CiaoSR generator.

    Args:
        encoder: 'edsr_baseline' | 'rdn' | 'swinir' | 'rrdb'; encoder_opt: its constructor options.
        local_size: 2 (2x2 neighbours, official), 3 (3x3) or 1 (nearest only).
        feat_unfold: use 3x3-unfolded features (9C channels) for query/key/value.
        non_local_attn: add the cross-scale attention features to the values.
        multi_scale: internal factors of the cross-scale attention.
        softmax_scale: divisor of the attention logits (official: 1, no 1/sqrt(d)).
        decoder_hidden, key_hidden, value_hidden: hidden widths of imnet_q, imnet_k, imnet_v.
    """

    def __init__(self, encoder: str = 'edsr_baseline', encoder_opt: Mapping[str, Any] | None = None,
                 local_size: int = 2, feat_unfold: bool = True, non_local_attn: bool = True,
                 multi_scale: Sequence[int] = (2,), softmax_scale: float = 1.0,
                 decoder_hidden: Sequence[int] = (256,) * 4, key_hidden: Sequence[int] = (256,) * 4,
                 value_hidden: Sequence[int] = (256,) * 4):
        super().__init__()
        if local_size not in NEIGHBOUR_OFFSETS:
            raise ValueError(f'local_size must be 1, 2 or 3, got {local_size}')
        enc = build_encoder(encoder, **(encoder_opt or {}))
        channels = enc.out_channels
        self.offsets = NEIGHBOUR_OFFSETS[local_size]
        self.feat_unfold = feat_unfold
        self.softmax_scale = softmax_scale
        key_dim = channels * 9 if feat_unfold else channels
        value_dim = key_dim + (channels * len(multi_scale) if non_local_attn else 0)
        self.imnet_q = MLP(value_dim, 3, decoder_hidden)
        self.imnet_k = MLP(key_dim + 4, key_dim, key_hidden)
        self.imnet_v = MLP(value_dim + 4, value_dim, value_hidden)
        self.cs_attn = CrossScaleAttention(channels, multi_scale) if non_local_attn else None
        self.attach_encoder(enc)
        if self.has_base_image:  # start as the base network itself: the decoder's output (the residual) is zero
            nn.init.zeros_(self.imnet_q.output_layer.weight)
            nn.init.zeros_(self.imnet_q.output_layer.bias)

    @staticmethod
    def options_from_state(state: Mapping[str, torch.Tensor], channels: int) -> dict[str, Any] | None:
        """The head's options read off a state_dict whose encoder gives `channels` features (feature unfold, the
        non-local branch and its factors, the three MLPs' hidden widths), or None when `state` holds no CiaoSR head
        (`imnet_q.*` and `imnet_k.*`). LookupError naming a key its options need that `state` lacks."""
        if not all(any(k.startswith(head) for k in state) for head in ('imnet_q.', 'imnet_k.')):
            return None
        scales = [2 if m.group(1) is None else int(m.group(1))
                  for k in state if (m := re.fullmatch(r'cs_attn\.down(?:x(\d+))?\.weight', k))]
        return {'feat_unfold': state['imnet_k.layers.0.weight'].shape[1] - 4 == 9 * channels,
                'non_local_attn': any(k.startswith('cs_attn.') for k in state), 'multi_scale': scales or [2],
                'decoder_hidden': MLP.hidden_from_state(state, 'imnet_q'),
                'key_hidden': MLP.hidden_from_state(state, 'imnet_k'),
                'value_hidden': MLP.hidden_from_state(state, 'imnet_v')}

    @property
    def min_input_side(self) -> int:
        """2 pixels at least: the neighbour step divides by (side - 1) and the neighbours of a query must
        differ; the cross-scale attention reflect-pads to a multiple of its factor s, which needs side > s / 2."""
        factors = self.cs_attn.scales if self.cs_attn is not None else ()
        return max(super().min_input_side, 2, *(s // 2 + 1 for s in factors))

    @property
    def tile_wide_attention(self) -> bool:
        """True with the cross-scale attention (official checkpoints), which scores every patch of a tile against
        every other one."""
        return self.cs_attn is not None

    def encode(self, lr: torch.Tensor, out_size: tuple[int, int] | None = None) -> CiaoSRBank:
        """Per-image work, done once: encoder, unfold, non-local attention, first-layer products, and
        (when the output will have >= PAIR_TABLE_MIN_RATIO queries per LR pixel) the key/query pair table."""
        lr = lr - self.rgb_mean
        feat = self.encoder(lr)
        h, w = feat.shape[-2:]
        base = self.base_network
        skip = lanczos_source(base.base_image(feat) - self.rgb_mean) if base is not None else lr
        values = unfold3x3(feat) if self.feat_unfold else feat
        if self.cs_attn is not None:
            values = torch.cat([values, self.cs_attn(feat)], 1)
        values = channels_last(values).contiguous()  # [B, hw, D]: one row per LR pixel, gathered by index
        unfolded = self.unfolded(values)
        bank: CiaoSRBank = {'skip': skip, 'size': (h, w), 'unfolded': unfolded, 'values': values,
                            'key_proj': self.imnet_k.project(unfolded), 'value_proj': self.imnet_v.project(values)}
        if out_size is not None and out_size[0] * out_size[1] >= PAIR_TABLE_MIN_RATIO * h * w:
            bank['pair_key'], bank['pair_bias'] = self.pair_table(unfolded, h, w)
        return bank

    @property
    def base_network(self) -> RRDBEncoder | None:
        """The encoder when the skip is its base image (`rrdb` with `upsampler=True`), else None (the LR image)."""
        encoder = self.encoder
        return encoder if isinstance(encoder, RRDBEncoder) and encoder.upsampler else None

    @property
    def has_base_image(self) -> bool:
        """Whether the skip is the encoder's base image (`rrdb` with `upsampler=True`) rather than the LR image."""
        return self.base_network is not None

    def unfolded(self, values: torch.Tensor) -> torch.Tensor:
        """The unfolded features u [..., 9C] (or [..., C]) of a bank's `values` [..., D]: a view of their first
        channels (the rest are the cross-scale attention's)."""
        return values[..., :self.imnet_k.output_layer.out_features]

    def pair_table(self, unfolded: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Query-key products folded into the key net's output layer, per LR pixel p and displacement d.

        The attention logit of a query at pixel p and a key at pixel p + d (|d| <= 1 on each axis) is
        <u_p, u_{p+d} * (W h + b)> = <W^T (u_p * u_{p+d}), h> + <u_p * u_{p+d}, b>, with h the key net's
        last hidden activation. Tabulating both terms costs 9 products per LR pixel instead of one
        (W h) per query and neighbour. Returns [B, h*w*9, H] and [B, h*w*9], row p*9 + d.
        Built one displacement and one band of rows at a time, so its temporaries stay small. The product for p and
        d is the one for p' = p + d and -d, so the last 4 displacements are copies of the first 4, shifted by d.
        """
        b, _, dim = unfolded.shape
        grid = unfolded.view(b, h, w, dim)
        out_layer = self.imnet_k.output_layer
        pair_key = unfolded.new_zeros(b, h, w, 9, out_layer.in_features)
        pair_bias = unfolded.new_zeros(b, h, w, 9)
        band = max(1, PAIR_TABLE_BAND_PIXELS // w)
        for d, (dy, dx) in enumerate(itertools.product((-1, 0, 1), repeat=2)):
            x0, x1 = max(0, -dx), min(w, w - dx)  # columns whose partner x + dx is inside the map
            if d > 4:  # row (p, d) = row (p + d, 8 - d), 8 - d being the displacement -d; zero where p + d is outside
                y0, y1 = max(0, -dy), min(h, h - dy)
                for table in (pair_key, pair_bias):
                    table[:, y0:y1, x0:x1, d] = table[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx, 8 - d]
                continue
            for r0 in range(0, h, band):
                r1 = min(h, r0 + band)
                y0, y1 = max(r0, -dy), min(r1, h - dy)
                products = grid.new_empty(b, r1 - r0, w, dim)  # u_p * u_{p+d}; zero where p + d is outside
                torch.mul(grid[:, y0:y1, x0:x1], grid[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx],
                          out=products[:, y0 - r0:y1 - r0, x0:x1])
                for outside in (products[:, :y0 - r0], products[:, y1 - r0:], products[:, :, :x0], products[:, :, x1:]):
                    outside.zero_()
                pair_key[:, r0:r1, :, d], pair_bias[:, r0:r1, :, d] = self.runtime.pair_rows(self, products)
        return pair_key.view(b, h * w * 9, -1), pair_bias.view(b, -1)

    def pair_rows(self, products: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of the pair table for products u_p * u_{p+d} [..., K]: (products @ W [..., H], products @ b [...]),
        with W, b the key net's output layer."""
        out_layer = self.imnet_k.output_layer
        return products @ out_layer.weight, products @ out_layer.bias

    def decode(self, bank: CiaoSRBank, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """RGB [B, Q, 3] at coord [B, Q, 2] for output pixels of size cell [B, Q, 2]: `attend` at the queries'
        `query_layout`, run by the runtime attached as `self.runtime` (`ciaosr_arch.runtimes`: PyTorch by default)."""
        return self.runtime.attend(self, bank, *self.query_layout(bank, coord, cell))

    def query_layout(self, bank: CiaoSRBank, coord: torch.Tensor, cell: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where each query reads the bank: index work only, no feature arithmetic.

        Returns the neighbours' flat LR indices [B, Q, N], the extra MLP inputs [B, Q, N, 4] (`neighbours`),
        the rows that score them (with a pair table: rows p*9 + d of it, [B, Q, N]; else the query's own
        LR pixel, [B, Q]) and the skip [B, Q, 3] (mean-subtracted RGB: the LR image bilinearly, or the encoder's base
        image by Lanczos).
        """
        h, w = bank['size']
        query_index = sample_nearest_index(coord, h, w)  # [B, Q]
        index, extra = self.neighbours(coord, cell, h, w)  # [B, Q, N], [B, Q, N, 4]
        score_index = query_index
        if 'pair_key' in bank:
            score_index = query_index.unsqueeze(-1) * 9 + displacement_code(query_index, index, w)
        skip = (sample_lanczos if self.has_base_image else sample_bilinear)(bank['skip'], coord)
        return index, extra, score_index, skip

    def attend(self, bank: AttendTables, index: torch.Tensor, extra: torch.Tensor, score_index: torch.Tensor,
               residual: torch.Tensor) -> torch.Tensor:
        """RGB [B, Q, 3] from the bank's per-pixel tables at a `query_layout`: key and value nets, the softmax
        attention over the N neighbours, the decoder, plus the residual and the mean (the per-query arithmetic)."""
        key_hidden = self.imnet_k.hidden(gather_pixels(bank['key_proj'], index), extra)
        if 'pair_key' in bank and 'pair_bias' in bank:  # the pair table (both or neither)
            logits = (gather_pixels(bank['pair_key'], score_index) * key_hidden).sum(-1)
            logits = logits + gather_pixels(bank['pair_bias'], score_index)
        else:
            keys = gather_pixels(bank['unfolded'], index) * self.imnet_k.head(key_hidden)
            logits = (keys * gather_pixels(bank['unfolded'], score_index).unsqueeze(2)).sum(-1)
        weights = (logits / self.softmax_scale).softmax(-1)  # [B, Q, N]

        value_gate = self.imnet_v.head(self.imnet_v.hidden(gather_pixels(bank['value_proj'], index), extra))
        values = value_gate.mul_(gather_pixels(bank['values'], index))  # [B, Q, N, D], in the gate's buffer
        attended = (weights.unsqueeze(-2) @ values).squeeze(-2)  # softmax-weighted sum over the N neighbours
        rgb = self.imnet_q(attended) + residual
        return rgb + self.rgb_mean.view(1, 1, 3)

    def neighbours(self, coord: torch.Tensor, cell: torch.Tensor, h: int, w: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """LR pixels each query attends to, and the 4 extra MLP inputs [rel_row, rel_col, cell_h, cell_w].

        The neighbour step is (1 - cell) / (size - 1) per axis (official; LIIF uses 1 / size), taken
        from the first query's cell of each image. rel and cell are in LR-pixel units.
        Returns flat indices [B, Q, N] and extras [B, Q, N, 4].
        """
        size = coord.new_tensor([h, w])
        index, rel = neighbour_pixels(coord, self.offsets, (1 - cell[:, 0]) / (size - 1), h, w)
        return index, torch.cat([rel, (cell * size).unsqueeze(2).expand_as(rel)], -1)


def displacement_code(query_index: torch.Tensor, index: torch.Tensor, width: int) -> torch.Tensor:
    """Position d in 0..8 ((dy + 1) * 3 + dx + 1) of each neighbour pixel relative to its query's pixel.

    query_index [B, Q], index [B, Q, N] (flat LR indices) -> [B, Q, N]. Neighbours are never more than
    one pixel away on either axis (the shift is at most one LR pixel for sizes >= 2).
    """
    dy = index // width - (query_index // width).unsqueeze(-1)
    dx = index % width - (query_index % width).unsqueeze(-1)
    if dy.abs().max() > 1 or dx.abs().max() > 1:
        raise ValueError('feature maps smaller than 2x2 are not supported')
    return (dy + 1) * 3 + dx + 1


def without_non_local(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CiaoSR weights with the non-local branch removed, as the network without it (`non_local_attn=False`).

    The value net reads [unfolded u (K), non-local n, rel and cell (4)] and gates [u, n]; the decoder reads
    the gated values. Dropping n's input columns, n's output rows and the decoder's n columns gives exactly
    the original network with n = 0, the natural start for fine-tuning without the branch. A state_dict
    without `cs_attn.*` keys is returned unchanged.
    """
    if not any(k.startswith('cs_attn.') for k in state):
        return state
    key_dim = state['imnet_k.layers.0.weight'].shape[1] - 4
    keep_in = torch.cat([torch.arange(key_dim), torch.arange(state['imnet_v.layers.0.weight'].shape[1] - 4,
                                                             state['imnet_v.layers.0.weight'].shape[1])])
    last_v = count_indices(state, r'imnet_v\.layers\.(\d+)\.weight') - 1  # the output layer's index
    state = {k: v for k, v in state.items() if not k.startswith('cs_attn.')}
    state['imnet_v.layers.0.weight'] = state['imnet_v.layers.0.weight'][:, keep_in]
    state[f'imnet_v.layers.{last_v}.weight'] = state[f'imnet_v.layers.{last_v}.weight'][:key_dim]
    state[f'imnet_v.layers.{last_v}.bias'] = state[f'imnet_v.layers.{last_v}.bias'][:key_dim]
    state['imnet_q.layers.0.weight'] = state['imnet_q.layers.0.weight'][:, :key_dim]
    return state
