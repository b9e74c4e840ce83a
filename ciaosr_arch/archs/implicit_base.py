"""Pieces shared by the implicit SR archs (CiaoSR, LIIF): the MLP and the encoder + head network.

Every implicit net here splits its forward pass in two, so that whole-image inference can do the
feature-side work once and decode query points in chunks:
    bank = net.encode(lr)               # once per image: encoder, unfold, per-pixel products
    rgb = net.decode(bank, coord, cell) # per chunk of queries
and `net(lr, coord, cell) == net.decode(net.encode(lr), coord, cell)`. What the bank holds is each arch's own
(`CiaoSRBank`, `LIIFBank`): `ImplicitSRNet` is generic in it.
"""
import re
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..runtimes.base import DecodeRuntime, TorchRuntime

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K mean, subtracted from the input and added to the output
Bank = TypeVar('Bank', bound=Mapping[str, Any])  # what an arch's `encode` returns and its `decode` reads


class Encoder(Protocol):
    """What a head needs of its encoder (`encoders`: an nn.Module): RGB [B, 3, h, w] (mean subtracted) to features
    [B, out_channels, h, w]."""

    out_channels: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class MLP(nn.Module):
    """Linear-ReLU stack; parameters live under `layers.{0,2,4,...}` as in official checkpoints.

    Its first layer is linear, so when the input is [per-pixel features, per-query extras] the
    feature part (and the bias) can be projected once per LR pixel (`project`) and finished per
    query (`hidden`, then `head`), instead of multiplying every query's copy of the same features:
    head(hidden(project(feat), extra)) == forward(cat([feat, extra], -1)).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256, 256, 256)):
        super().__init__()
        dims = [in_dim, *hidden]
        layers = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-1], out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    @staticmethod
    def hidden_from_state(state: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
        """Hidden widths (a list of ints) of the MLP whose weights are `state`'s keys `{prefix}.layers.N.*`."""
        n_layers = (count_indices(state, re.escape(prefix) + r'\.layers\.(\d+)\..+') + 1) // 2  # (linear, ReLU)
        return [state[f'{prefix}.layers.{2 * i}.weight'].shape[0] for i in range(n_layers - 1)]

    @property
    def input_layer(self) -> nn.Linear:
        """The first linear layer (`layers.0`)."""
        return cast(nn.Linear, self.layers[0])

    @property
    def output_layer(self) -> nn.Linear:
        """The last linear layer, the output layer."""
        return cast(nn.Linear, self.layers[-1])

    def project(self, feat: torch.Tensor) -> torch.Tensor:
        """First layer on the leading feat.shape[-1] inputs, bias included: [..., D] -> [..., H1]."""
        return F.linear(feat, self.input_layer.weight[:, :feat.shape[-1]], self.input_layer.bias)

    def hidden(self, projected: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """Last hidden activation for inputs [feat, extra] given project(feat): extra [..., E] -> [..., H]. The extras
        (coordinates, float32) are taken in the projection's dtype (that of a bf16 or float64 network)."""
        weight = self.input_layer.weight[:, -extra.shape[-1]:]
        x = torch.addmm(projected.reshape(-1, projected.shape[-1]), extra.reshape(-1, extra.shape[-1]).to(projected),
                        weight.t())
        # Rows stay flat through the layers: OpenVINO fuses the bias into an int8 product only for 2-D inputs.
        return self.layers[2:-1](x.relu_()).view(*projected.shape[:-1], self.output_layer.in_features)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output layer: [..., H] -> [..., out] (on flat rows, as `hidden`)."""
        out = self.output_layer
        return out(hidden.reshape(-1, hidden.shape[-1])).view(*hidden.shape[:-1], out.out_features)


def count_indices(state: Mapping[str, Any], pattern: str) -> int:
    """1 + the largest integer N in the keys of a state_dict `state` that match `pattern` (a regular expression with
    one (\\d+) group, e.g. r'body\\.(\\d+)\\..+' counts the blocks), 0 when none does. The largest, not the
    number of distinct ones: a file that lacks a block or layer in between (or a key of the last) is then built with
    it, and the match names what is missing (a review: counting them named the next block as unexpected)."""
    return 1 + max((int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))), default=-1)


def unfold3x3(feat: torch.Tensor) -> torch.Tensor:
    """3x3 neighbourhood of every pixel, zero padded, channel-major: [B, C, h, w] -> [B, 9C, h, w]."""
    b, c, h, w = feat.shape
    return F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)


def channels_last(feat: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, h*w, C], so that LR pixels can be gathered by flat index."""
    return feat.flatten(2).transpose(1, 2)


def gather_pixels(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of a per-pixel table [B, h*w, *D] at flat indices [B, ...] -> [B, ..., *D].

    One index_select over the batch-flattened table: several times faster on CPU than advanced
    indexing with a batch index (which takes a generic scatter-gather path).
    """
    b, n = table.shape[:2]
    offsets = torch.arange(0, b * n, n, device=index.device).view(-1, *[1] * (index.dim() - 1))
    rows = table.flatten(0, 1).index_select(0, (index + offsets).flatten())
    return rows.view(*index.shape, *table.shape[2:])


class ImplicitSRNet(nn.Module, Generic[Bank]):
    """An encoder (without up-sampling tail) followed by an implicit head; subclasses build the head.

    Input: LR RGB in [0, 1]. The head works in mean-subtracted space like the official restorer,
    and `decode` returns RGB in [0, 1] units (mean added back, not clamped).
    The encoder's parameters are stored at the top level of the state_dict (`conv_first.weight`,
    not `encoder.conv_first.weight`), which is the official layout.
    """

    encoder: Encoder
    rgb_mean: torch.Tensor  # [1, 3, 1, 1], a buffer (`register_buffer`)
    arch: dict[str, Any]  # the arch dict ({'type': ..., **options}) of a net that `load_model` made

    def __init__(self):
        super().__init__()
        # What runs the decode's arithmetic (`ciaosr_arch.runtimes`; `ciaosr_arch.runtime.use_runtime` swaps it). Not
        # a module: attaching one never changes the parameters or the state_dict.
        self.runtime: DecodeRuntime = TorchRuntime()
        self.register_buffer('rgb_mean', torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

    def attach_encoder(self, encoder: Encoder) -> None:
        """Register the encoder after the head (official key order) and store its keys flat."""
        self.encoder = encoder
        self.register_state_dict_post_hook(_flatten_encoder_keys)
        self.register_load_state_dict_pre_hook(_nest_encoder_keys)

    @property
    def min_input_side(self) -> int:
        """Smallest LR height and width (pixels) that `encode` accepts; `super_resolve` pads smaller images."""
        return getattr(self.encoder, 'min_input_side', 1)

    @property
    def tile_wide_attention(self) -> bool:
        """Whether `encode` attends over the whole tile, so that its work per LR pixel grows with the tile's area
        (the tools then cap the automatic tile for speed, `ciaosr_arch.engine.speed_tile`). False here: the
        encoders' convolutions and windows cost the same per pixel at any tile size."""
        return False

    def forward(self, lr: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """lr [B, 3, h, w] in [0, 1]; coord, cell [B, Q, 2] (row, col) -> RGB [B, Q, 3]."""
        return self.decode(self.encode(lr), coord, cell)

    def encode(self, lr: torch.Tensor, out_size: tuple[int, int] | None = None) -> Bank:
        """Per-image work; `out_size` (H, W) is the size it will be decoded at, when known in advance."""
        raise NotImplementedError

    def decode(self, bank: Bank, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """RGB [B, Q, 3] (in [0, 1] units, not clamped) at coord [B, Q, 2] for output pixels of size cell [B, Q, 2]."""
        raise NotImplementedError


def _flatten_encoder_keys(module, state_dict, prefix, local_metadata):
    nested = prefix + 'encoder.'
    for key in [k for k in state_dict if k.startswith(nested)]:
        state_dict[prefix + key[len(nested):]] = state_dict.pop(key)


def _nest_encoder_keys(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                       error_msgs):
    names = set(module.encoder._modules) | set(module.encoder._parameters) | set(module.encoder._buffers)
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if key[len(prefix):].split('.', 1)[0] in names:
            state_dict[prefix + 'encoder.' + key[len(prefix):]] = state_dict.pop(key)
