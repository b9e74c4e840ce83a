"""Loading CiaoSR/LIIF weights from official mmediting checkpoints, BasicSR checkpoints and safetensors.

Checkpoints are read with `torch.load(..., weights_only=True)` or safetensors: nothing in a file is
ever executed. Arch options are taken from the safetensors metadata when present, otherwise
inferred from key names and tensor shapes (official files store no config we could trust).
"""
import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .archs import LIIF, CiaoSR

ARCHS = {'CiaoSR': CiaoSR, 'LIIF': LIIF}
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / 'weights'
DEFAULT_WEIGHTS = WEIGHTS_DIR / 'ciaosr_edsr_baseline.safetensors'
SHIPPED_MODELS = {  # name -> file in WEIGHTS_DIR ('default' is DEFAULT_WEIGHTS)
    'default': DEFAULT_WEIGHTS.name,  # bicubic degradation, scales 1-4
    'real-l1': 'ciaosr_realnet_x4_edsr.safetensors',  # real-world degradations, stage 1 (L1)
    'real': 'ciaosr_real_gan_x4_edsr.safetensors',  # real-world degradations, stage 2 (L1 + perceptual + GAN)
}
IGNORED_PREFIXES = ('discriminator.', 'perceptual_loss.', 'step_counter', 'net_d.')


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, or not a CiaoSR/LIIF generator."""


def read_checkpoint(path):
    """Generator state_dict and arch metadata (dict or None) of a .pth/.safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    if path.suffix == '.safetensors':
        try:
            with safe_open(str(path), framework='pt') as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f'{path}: not a readable safetensors file ({err})') from None
        arch = json.loads(meta['arch']) if 'arch' in meta else None
        return state, arch
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # pickle with code, truncated zip, random bytes: all refused the same way
        raise CheckpointError(f'{path}: cannot be loaded as plain weights (weights_only=True): '
                              f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}') from None
    return generator_state_dict(obj, path), None


def generator_state_dict(obj, source='checkpoint'):
    """Pick the generator weights out of a loaded checkpoint object.

    BasicSR: `params_ema`, else `params`. mmediting: `state_dict` with `generator_ema.` (preferred)
    or `generator.` keys; `module.` (DataParallel) prefixes are stripped; GAN extras are dropped.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f'{source}: expected a dict of tensors, got {type(obj).__name__}')
    for key in ('params_ema', 'params', 'state_dict'):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {k.removeprefix('module.'): v for k, v in obj.items() if torch.is_tensor(v)}
    for prefix in ('generator_ema.', 'generator.'):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    if not state:
        raise CheckpointError(f'{source}: no generator weights found')
    return state


def _count(state, pattern):
    """Number of distinct integers N in keys matching pattern (with one (\\d+) group)."""
    return len({m.group(1) for k in state if (m := re.fullmatch(pattern, k))})


def _hidden(state, prefix):
    n_layers = _count(state, re.escape(prefix) + r'\.layers\.(\d+)\.weight')
    return [state[f'{prefix}.layers.{2 * i}.weight'].shape[0] for i in range(n_layers - 1)]


def infer_encoder(state):
    """(encoder name, encoder_opt) from the encoder's keys and shapes."""
    if 'sfe1.weight' in state:
        return 'rdn', {'num_feat': state['sfe1.weight'].shape[0],
                       'num_block': _count(state, r'rdbs\.(\d+)\.lff\.weight'),
                       'num_layer': _count(state, r'rdbs\.0\.layers\.(\d+)\.conv\.weight'),
                       'growth': state['rdbs.0.layers.0.conv.weight'].shape[0]}
    if 'patch_embed.norm.weight' in state:
        dim = state['conv_first.weight'].shape[0]
        n_layers = _count(state, r'layers\.(\d+)\.conv\.weight')
        table = state['layers.0.residual_group.blocks.0.attn.relative_position_bias_table']
        window = (round(table.shape[0] ** 0.5) + 1) // 2
        masks = [v for k, v in state.items() if k.endswith('attn_mask')]
        img_size = round(masks[0].shape[0] ** 0.5) * window if masks else 48
        return 'swinir', {
            'img_size': img_size, 'embed_dim': dim, 'window_size': window,
            'depths': [_count(state, rf'layers\.{i}\.residual_group\.blocks\.(\d+)\.norm1\.weight')
                       for i in range(n_layers)],
            'num_heads': [state[f'layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table'].shape[1]
                          for i in range(n_layers)],
            'mlp_ratio': state['layers.0.residual_group.blocks.0.mlp.fc1.weight'].shape[0] / dim}
    if 'body.0.conv1.weight' in state:
        return 'edsr_baseline', {'num_feat': state['conv_first.weight'].shape[0],
                                 'num_block': _count(state, r'body\.(\d+)\.conv1\.weight')}
    raise CheckpointError('unknown encoder: expected EDSR (body.*), RDN (sfe1.*) or SwinIR (patch_embed.*) keys')


def infer_arch(state):
    """{'type': 'CiaoSR'|'LIIF', **options} from a generator state_dict."""
    encoder, encoder_opt = infer_encoder(state)
    channels = encoder_opt.get('num_feat', encoder_opt.get('embed_dim'))
    if 'imnet_q.layers.0.weight' in state and 'imnet_k.layers.0.weight' in state:
        scales = [2 if m.group(1) is None else int(m.group(1))
                  for k in state if (m := re.fullmatch(r'cs_attn\.down(?:x(\d+))?\.weight', k))]
        return {'type': 'CiaoSR', 'encoder': encoder, 'encoder_opt': encoder_opt,
                'feat_unfold': state['imnet_k.layers.0.weight'].shape[1] - 4 == 9 * channels,
                'non_local_attn': bool(scales), 'multi_scale': scales or [2],
                'decoder_hidden': _hidden(state, 'imnet_q'), 'key_hidden': _hidden(state, 'imnet_k'),
                'value_hidden': _hidden(state, 'imnet_v')}
    if 'imnet.layers.0.weight' in state:
        in_dim = state['imnet.layers.0.weight'].shape[1]
        feat_unfold = in_dim - 2 >= 9 * channels
        return {'type': 'LIIF', 'encoder': encoder, 'encoder_opt': encoder_opt, 'feat_unfold': feat_unfold,
                'cell_decode': in_dim - channels * (9 if feat_unfold else 1) == 4, 'hidden': _hidden(state, 'imnet')}
    raise CheckpointError('not a CiaoSR or LIIF generator: no imnet_q/imnet_k or imnet keys')


def build_net(arch):
    """Network from an arch dict {'type': ..., **options}."""
    options = dict(arch)
    kind = options.pop('type')
    if kind not in ARCHS:
        raise CheckpointError(f'unknown arch type {kind!r}')
    return ARCHS[kind](**options)


def shipped_weights(name):
    """Path of a shipped model by name (SHIPPED_MODELS); CheckpointError if the name is unknown or the file missing."""
    if name not in SHIPPED_MODELS:
        raise CheckpointError(f'unknown model name {name!r}; shipped models: {", ".join(SHIPPED_MODELS)}')
    path = DEFAULT_WEIGHTS if name == 'default' else WEIGHTS_DIR / SHIPPED_MODELS[name]
    if not path.is_file():
        raise CheckpointError(f'the {name} weights are missing ({path}); pass a checkpoint path')
    return path


def resolve_weights(spec=None):
    """Checkpoint path for `spec`: None -> the default model; a shipped name (SHIPPED_MODELS) -> its file
    (unless a file of that name exists in the working directory); anything else -> Path(spec)."""
    if spec is None:
        return shipped_weights('default')
    if str(spec) in SHIPPED_MODELS and not Path(spec).exists():
        return shipped_weights(str(spec))
    return Path(spec)


def without_non_local(state):
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
    last_v = 2 * (_count(state, r'imnet_v\.layers\.(\d+)\.weight') - 1)
    state = {k: v for k, v in state.items() if not k.startswith('cs_attn.')}
    state['imnet_v.layers.0.weight'] = state['imnet_v.layers.0.weight'][:, keep_in]
    state[f'imnet_v.layers.{last_v}.weight'] = state[f'imnet_v.layers.{last_v}.weight'][:key_dim]
    state[f'imnet_v.layers.{last_v}.bias'] = state[f'imnet_v.layers.{last_v}.bias'][:key_dim]
    state['imnet_q.layers.0.weight'] = state['imnet_q.layers.0.weight'][:, :key_dim]
    return state


def load_model(path=None, device='cpu', **overrides):
    """CiaoSR/LIIF network in eval mode from a checkpoint or a shipped model's name (default: 'default').

    `path`: a file, or one of SHIPPED_MODELS ('default', 'real-l1', 'real'); see `resolve_weights`.
    Accepts official mmediting checkpoints, BasicSR checkpoints and .safetensors; options not
    stored in the weights (e.g. `local_size`, `softmax_scale`) can be given as keyword arguments.
    Loading is strict: a mismatch raises CheckpointError naming the missing and unexpected keys.
    """
    path = resolve_weights(path)
    state, arch = read_checkpoint(path)
    try:
        arch = {**(arch or infer_arch(state)), **overrides}
        net = build_net(arch)
    except (KeyError, IndexError, TypeError) as err:
        raise CheckpointError(f'{path}: cannot infer the network from its keys ({type(err).__name__}: {err})') from None
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f'{k} {tuple(state[k].shape)} != {tuple(v.shape)}' for k, v in expected.items()
                   if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        def listing(keys):
            return ', '.join(keys[:8]) + (f' ... ({len(keys)} in all)' if len(keys) > 8 else '') or 'none'
        raise CheckpointError(f'{path} does not match {arch["type"]}({arch["encoder"]}): '
                              f'missing keys: {listing(missing)}; '
                              f'unexpected keys: {listing(unexpected)}; wrong shapes: {listing(wrong_shape)}')
    net.load_state_dict(state)
    net.arch = arch
    return net.eval().to(device)


def save_safetensors(net, path, arch, metadata=None):
    """Write net's weights with its arch dict (and free-form string metadata) to a .safetensors file."""
    meta = {'format': 'pt', 'arch': json.dumps(arch), **{k: str(v) for k, v in (metadata or {}).items()}}
    save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(path), metadata=meta)
