"""Feature encoders of the implicit heads: EDSR-baseline, RDN, SwinIR and RRDB without up-sampling tails.

Parameter names follow the official checkpoints (mmedit EDSR/RDN, BasicSR SwinIR and RRDBNet), so an
encoder's state_dict keys are exactly the ones the official generator stores at its top level.
Each encoder maps an RGB batch [B, 3, h, w] (mean already subtracted) to features [B, C, h, w] and
exposes C as `out_channels`. Each also reads its options back off a state_dict (`options_from_state`, by the
keys only its weights have and their shapes): `encoder_from_state` finds the encoder of a checkpoint.
"""
import torch
import torch.nn.functional as F
from basicsr.archs.arch_util import ResidualBlockNoBN, make_layer
from basicsr.archs.rrdbnet_arch import RRDB
from basicsr.archs.swinir_arch import SwinIR
from torch import nn

from .implicit_base import RGB_MEAN, count_indices


class EDSRBaselineEncoder(nn.Module):
    """EDSR body: conv, residual blocks (conv-ReLU-conv), conv, plus the first conv's output."""

    def __init__(self, num_feat=64, num_block=16, res_scale=1.0):
        super().__init__()
        self.out_channels = num_feat
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.body = make_layer(ResidualBlockNoBN, num_block, num_feat=num_feat, res_scale=res_scale)
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    @staticmethod
    def options_from_state(state):
        """This encoder's options read off a state_dict, or None when `state` holds no EDSR blocks."""
        blocks = count_indices(state, r'body\.(\d+)\.conv[12]\..+')
        if not blocks:
            return None
        return {'num_feat': state['conv_first.weight'].shape[0], 'num_block': blocks}

    def forward(self, x):
        x = self.conv_first(x)
        return self.conv_after_body(self.body(x)) + x


class DenseLayer(nn.Module):
    """conv3x3 + ReLU whose output is concatenated to its input (RDN's dense connection)."""

    def __init__(self, in_channels, growth):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1)

    def forward(self, x):
        return torch.cat([x, F.relu(self.conv(x))], 1)


class ResidualDenseBlock(nn.Module):
    """Dense layers, 1x1 local feature fusion (`lff`) and a local residual."""

    def __init__(self, channels, growth, num_layers):
        super().__init__()
        self.layers = nn.Sequential(*[DenseLayer(channels + growth * i, growth) for i in range(num_layers)])
        self.lff = nn.Conv2d(channels + growth * num_layers, channels, 1)

    def forward(self, x):
        return x + self.lff(self.layers(x))


class RDNEncoder(nn.Module):
    """RDN body: two shallow convs, residual dense blocks, global feature fusion, global residual."""

    def __init__(self, num_feat=64, num_block=16, num_layer=8, growth=64):
        super().__init__()
        self.out_channels = num_feat
        self.sfe1 = nn.Conv2d(3, num_feat, 3, padding=1)
        self.sfe2 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.rdbs = nn.ModuleList([ResidualDenseBlock(num_feat, growth, num_layer) for _ in range(num_block)])
        self.gff = nn.Sequential(nn.Conv2d(num_feat * num_block, num_feat, 1),
                                 nn.Conv2d(num_feat, num_feat, 3, padding=1))

    @staticmethod
    def options_from_state(state):
        """This encoder's options read off a state_dict, or None when `state` holds no RDN (`sfe1.*`)."""
        if not any(k.startswith(('sfe1.', 'rdbs.')) for k in state):
            return None
        return {'num_feat': state['sfe1.weight'].shape[0],
                'num_block': count_indices(state, r'rdbs\.(\d+)\..+'),
                'num_layer': count_indices(state, r'rdbs\.0\.layers\.(\d+)\..+'),
                'growth': state['rdbs.0.layers.0.conv.weight'].shape[0]}

    def forward(self, x):
        shallow = self.sfe1(x)
        x = self.sfe2(shallow)
        block_outputs = []
        for block in self.rdbs:
            x = block(x)
            block_outputs.append(x)
        return self.gff(torch.cat(block_outputs, 1)) + shallow


class SwinIREncoder(SwinIR):
    """BasicSR's SwinIR (classical-SR sizes by default) used up to `conv_after_body` + residual.

    The input is reflect-padded bottom/right to a multiple of the window and the features are
    cropped back. Like the official generator, Linear/LayerNorm keep PyTorch's default init (only
    the relative-position tables are truncated-normal), and no mean shift happens inside.
    """

    def __init__(self, img_size=48, embed_dim=180, depths=(6, 6, 6, 6, 6, 6), num_heads=(6, 6, 6, 6, 6, 6),
                 window_size=8, mlp_ratio=2.0, drop_path_rate=0.1):
        super().__init__(img_size=img_size, in_chans=3, embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                         window_size=window_size, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate, upsampler='')
        del self.conv_last
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.LayerNorm)):
                module.reset_parameters()
        self.window_size = window_size
        self.out_channels = embed_dim
        # Reflect padding to the window needs fewer padded than real pixels: side > window / 2.
        self.min_input_side = window_size // 2 + 1

    @staticmethod
    def options_from_state(state):
        """This encoder's options read off a state_dict, or None when `state` holds no SwinIR (`patch_embed.*`).
        `img_size` comes from the stored attention masks (48 without them), `drop_path_rate` is not stored."""
        if not any(k.startswith('patch_embed.') for k in state):
            return None
        dim = state['conv_first.weight'].shape[0]
        n_layers = count_indices(state, r'layers\.(\d+)\..+')
        table = state['layers.0.residual_group.blocks.0.attn.relative_position_bias_table']
        window = (round(table.shape[0] ** 0.5) + 1) // 2
        masks = [v for k, v in state.items() if k.endswith('attn_mask')]
        img_size = round(masks[0].shape[0] ** 0.5) * window if masks else 48
        return {
            'img_size': img_size, 'embed_dim': dim, 'window_size': window,
            'depths': [count_indices(state, rf'layers\.{i}\.residual_group\.blocks\.(\d+)\..+')
                       for i in range(n_layers)],
            'num_heads': [state[f'layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table'].shape[1]
                          for i in range(n_layers)],
            'mlp_ratio': state['layers.0.residual_group.blocks.0.mlp.fc1.weight'].shape[0] / dim}

    def forward(self, x):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % self.window_size, 0, -h % self.window_size), mode='reflect')
        x = self.conv_first(x)
        # BasicSR's blocks make their attention mask in float32 at sizes other than img_size: in a float16 or bfloat16
        # network, autocast to its dtype takes the mixed products (float32 and float64 need nothing)
        with torch.autocast(x.device.type, x.dtype, enabled=x.dtype in (torch.float16, torch.bfloat16)):
            features = self.forward_features(x)
        x = self.conv_after_body(features.to(x.dtype)) + x
        return x[..., :h, :w]


class RRDBEncoder(nn.Module):
    """ESRGAN's RRDBNet trunk (BasicSR's RRDB blocks) up to `conv_body` plus the first conv's output: features at
    LR resolution; with `upsampler=True` also RRDBNet's x4 tail, which makes the base image of the head's skip.

    The trunk of Real-ESRGAN x4plus (`num_feat=64, num_block=23, num_grow_ch=32`, the defaults; BSD-3, Wang et al.
    2021) already removes real-world blur, noise and JPEG artifacts, so its weights (`RealESRGAN_x4plus.pth`, keys
    `conv_first.*`, `body.N.rdbK.convM.*`, `conv_body.*`, and for the tail `conv_up1.*`, `conv_up2.*`, `conv_hr.*`,
    `conv_last.*`) are the natural start of a real-world CiaoSR. RRDBNet reads plain RGB in [0, 1]: the DIV2K mean
    that the implicit heads subtract is added back here.
    """

    base_scale = 4  # the tail's output is 4x the input (RRDBNet at scale 4: two nearest x2 steps)

    def __init__(self, num_feat=64, num_block=23, num_grow_ch=32, upsampler=False):
        super().__init__()
        self.out_channels = num_feat
        self.upsampler = upsampler
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.body = make_layer(RRDB, num_block, num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        if upsampler:
            self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
        self.register_buffer('rgb_mean', torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def options_from_state(state):
        """This encoder's options read off a state_dict, or None when `state` holds no RRDB blocks (`body.N.rdb1.*`);
        `upsampler` (only when True) when RRDBNet's x4 tail is there (`conv_up1.*`)."""
        blocks = count_indices(state, r'body\.(\d+)\.rdb[123]\..+')
        if not blocks:
            return None
        return {'num_feat': state['conv_first.weight'].shape[0], 'num_block': blocks,
                'num_grow_ch': state['body.0.rdb1.conv1.weight'].shape[0],
                **({'upsampler': True} if 'conv_up1.weight' in state else {})}

    def forward(self, x):
        feat = self.conv_first(x + self.rgb_mean)
        return self.conv_body(self.body(feat)) + feat

    def base_image(self, feat):
        """RRDBNet's x4 output (RGB, [0, 1] units, not clamped) from this encoder's features [B, C, h, w]:
        [B, 3, 4h, 4w]. Needs `upsampler=True`."""
        act = F.leaky_relu
        feat = act(self.conv_up1(F.interpolate(feat, scale_factor=2, mode='nearest')), 0.2)
        feat = act(self.conv_up2(F.interpolate(feat, scale_factor=2, mode='nearest')), 0.2)
        return self.conv_last(act(self.conv_hr(feat), 0.2))


ENCODERS = {'edsr_baseline': EDSRBaselineEncoder, 'rdn': RDNEncoder, 'swinir': SwinIREncoder,
            'rrdb': RRDBEncoder}


def encoder_from_state(state):
    """(encoder name, encoder options) of the encoder whose weights a state_dict holds (each encoder's
    `options_from_state`), or None when it holds none of theirs. LookupError, TypeError or ArithmeticError when
    the keys are there but incomplete or oddly shaped."""
    for name, encoder in ENCODERS.items():
        options = encoder.options_from_state(state)
        if options is not None:
            return name, options
    return None


def build_encoder(name, **options):
    """Encoder by name (`edsr_baseline`, `rdn`, `swinir`, `rrdb`) with its constructor options."""
    if name not in ENCODERS:
        raise ValueError(f'unknown encoder {name!r}; choose one of {sorted(ENCODERS)}')
    return ENCODERS[name](**options)
