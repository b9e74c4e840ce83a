"""Loading CiaoSR/LIIF weights from official mmediting checkpoints, BasicSR checkpoints and safetensors.

Checkpoints are read with `torch.load(..., weights_only=True)` or safetensors: nothing in a file is
ever executed. Arch options are taken from the safetensors metadata when present, otherwise
inferred from key names and tensor shapes (official files store no config we could trust).

Nothing in a file decides how much memory we allocate: the options are type- and range-checked,
the network is first built on the meta device (no storage) and compared key by key and shape by
shape with the file's tensors, and only then built for real. Weights must be finite floats.
"""
import inspect
import json
import math
import os
import pickle
import re
import secrets
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes
from torch.nn.modules.module import register_module_parameter_registration_hook
from torch.overrides import TorchFunctionMode

from .archs import LIIF, CiaoSR
from .archs.encoders import ENCODERS

ARCHS = {'CiaoSR': CiaoSR, 'LIIF': LIIF}
WEIGHTS_DIR = Path(__file__).resolve().parent / 'weights'  # package data
DEFAULT_WEIGHTS = WEIGHTS_DIR / 'ciaosr_edsr_baseline.safetensors'
SHIPPED_MODELS = {  # name -> file in WEIGHTS_DIR ('default' is DEFAULT_WEIGHTS)
    'default': DEFAULT_WEIGHTS.name,  # bicubic degradation, scales 1-4
    'real-l1': 'ciaosr_realnet_x4_edsr.safetensors',  # real-world degradations, stage 1 (L1)
    'real': 'ciaosr_real_rrdb_x4.safetensors',  # real-world: Real-ESRGAN's trunk + CiaoSR head, L1 then GAN stage
}
# `atomic_file`'s temporary files: .NAME.PID-XXXXXXXX.part, PID the writing process
PARTIAL_FILE = re.compile(r'\..+\.(\d+)-[0-9a-f]{8}\.part')
IGNORED_PREFIXES = ('discriminator.', 'perceptual_loss.', 'step_counter', 'net_d.')
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # weights load from any of these
# Other super-resolution networks people pass as --model, by keys that only their full network has (checked only
# in files without CiaoSR/LIIF head keys, imnet*): what the file is, and keys that must all be there. An RRDBNet is
# known by its upsampler, never by body.N.rdb* alone (an RRDB trunk can also be a CiaoSR encoder).
FOREIGN_NETWORKS = (
    ('a SwinIR (a whole super-resolution network)',
     ('layers.0.residual_group.blocks.0.attn.relative_position_bias_table', 'conv_after_body.weight')),
    ('an RRDBNet (ESRGAN / Real-ESRGAN)',
     ('conv_body.weight', 'conv_up1.weight', 'conv_hr.weight', 'conv_last.weight')),
    ('an SRVGGNetCompact (Real-ESRGAN compact / realesr-general)', ('body.0.weight', 'body.1.weight')),
    ('an RCAN (a whole super-resolution network)', ('body.0.residual_group.0.rcab.0.weight',)),  # BasicSR
    ('an RCAN (a whole super-resolution network)', ('body.0.body.0.body.3.conv_du.0.weight',)),  # official
    ('an EDSR (a whole super-resolution network)', ('head.0.weight', 'tail.0.0.weight')),  # official
    ('an EDSR (a whole super-resolution network)', ('body.0.conv1.weight', 'upsample.0.weight', 'conv_last.weight')),
)
MAX_OPTION = 2 ** 16  # largest integer option (channels, widths, block counts, sizes) a checkpoint may declare
MAX_LIST = 64  # longest list option (hidden widths, SwinIR stages) a checkpoint may declare


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, malformed, or not a CiaoSR/LIIF generator."""


def read_checkpoint(path, param_key=None, partial=False):
    """Generator state_dict {key: tensor} and arch metadata (dict or None) of a .pth/.safetensors file.

    With `partial=True` the file may hold only part of a network, such as Real-ESRGAN's trunk in its own file
    (`train.freeze_encoder` recipes): a safetensors file's metadata is not read (None is returned) and the whole of
    another super-resolution network is not refused (`refuse_foreign`).
    The suffix picks the reader, in any letter case (`.safetensors`, `.SAFETENSORS`; anything else goes
    to torch.load). `param_key` (e.g. 'params_ema') selects that entry of a BasicSR checkpoint when it
    has one. Raises CheckpointError for a missing or unreadable file or metadata 'arch' that is not a
    JSON object, and for the weights of another super-resolution network (`refuse_foreign`); the arch options
    are checked by `check_arch`, the tensors by `match_state`/`check_values`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}')
    if path.suffix.lower() == '.safetensors':
        try:
            with safe_open(str(path), framework='pt') as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f'{path}: not a readable safetensors file ({err})') from None
        if not partial:
            refuse_foreign(state, path)
        return state, None if partial else parse_arch_metadata(meta.get('arch'), path)
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:  # Python objects besides tensors (code, perhaps), or not a PyTorch file
        raise CheckpointError(f'{path}: cannot be loaded as plain weights: it holds Python objects besides tensors, '
                              'which could run code when loaded, or is not a PyTorch file at all; nothing in it was '
                              'run (only .safetensors files and .pth files of tensors are loaded)') from None
    except Exception as err:  # a truncated or damaged zip, ...
        raise CheckpointError(f'{path}: cannot be loaded as plain weights: {type(err).__name__}: '
                              f'{str(err).splitlines()[0] if str(err) else ""}') from None
    if param_key and isinstance(obj, dict) and isinstance(obj.get(param_key), dict):
        obj = obj[param_key]
    state = generator_state_dict(obj, path)
    if not partial:
        refuse_foreign(state, path)
    return state, None


def refuse_foreign(state, source):
    """Raise CheckpointError naming `source` if `state` ({key: tensor}) is the whole of another super-resolution
    network (FOREIGN_NETWORKS: RRDBNet, SRVGGNetCompact, SwinIR, RCAN, EDSR) rather than a CiaoSR/LIIF one."""
    if any(key.startswith('imnet') for key in state):
        return
    for what, keys in FOREIGN_NETWORKS:
        if all(key in state for key in keys):
            raise CheckpointError(f'{source}: this is {what} checkpoint, not a CiaoSR one; CiaoSR needs its own '
                                  f'weights: a shipped model ({", ".join(SHIPPED_MODELS)}) or a CiaoSR/LIIF '
                                  'checkpoint')


def parse_arch_metadata(text, source):
    """The safetensors metadata entry 'arch' (a JSON string, or None when absent) as a dict or None.

    Raises CheckpointError naming `source` when it is not JSON or not a JSON object.
    """
    if text is None:
        return None
    try:
        arch = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise CheckpointError(f"{source}: metadata 'arch' is not valid JSON ({err})") from None
    if not isinstance(arch, dict):
        raise CheckpointError(f"{source}: metadata 'arch' must be a JSON object, got {type(arch).__name__}")
    return arch


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
    if 'body.0.rdb1.conv1.weight' in state:
        return 'rrdb', {'num_feat': state['conv_first.weight'].shape[0],
                        'num_block': _count(state, r'body\.(\d+)\.rdb1\.conv1\.weight'),
                        'num_grow_ch': state['body.0.rdb1.conv1.weight'].shape[0],
                        **({'upsampler': True} if 'conv_up1.weight' in state else {})}
    if 'body.0.conv1.weight' in state:
        return 'edsr_baseline', {'num_feat': state['conv_first.weight'].shape[0],
                                 'num_block': _count(state, r'body\.(\d+)\.conv1\.weight')}
    raise CheckpointError('unknown encoder: expected EDSR (body.*), RDN (sfe1.*), SwinIR (patch_embed.*) or RRDB '
                          '(body.*.rdb1.*) keys')


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


def _is_size(value):
    return type(value) is int and 1 <= value <= MAX_OPTION


def _option_problem(name, value, default):
    """Why `value` is refused for the constructor argument `name` whose default is `default`; None if it is fine."""
    if name == 'encoder':
        return None if isinstance(value, str) and value in ENCODERS else f'must be one of {", ".join(ENCODERS)}'
    if name == 'encoder_opt':
        return None if value is None or isinstance(value, dict) else 'must be an object'
    if isinstance(default, bool):
        return None if isinstance(value, bool) else 'must be true or false'
    if isinstance(default, int):
        return None if _is_size(value) else f'must be an integer in [1, {MAX_OPTION}]'
    if isinstance(default, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if name == 'drop_path_rate':
            return None if number and 0 <= value < 1 else 'must be a number in [0, 1)'
        return None if number and 0 < value <= MAX_OPTION else f'must be a finite number in (0, {MAX_OPTION}]'
    if isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and len(value) <= MAX_LIST and all(_is_size(v) for v in value)
        return None if ok else f'must be a list of at most {MAX_LIST} integers in [1, {MAX_OPTION}]'
    return 'cannot be set from a checkpoint'


def _check_options(options, constructor, where):
    """Raise CheckpointError unless every option is an argument of `constructor` with an acceptable value."""
    params = inspect.signature(constructor).parameters
    for name, value in options.items():
        if name not in params:
            raise CheckpointError(f'{where}: unknown option {name!r}; known: {", ".join(params)}')
        problem = _option_problem(name, value, params[name].default)
        if problem:
            raise CheckpointError(f'{where}: option {name} = {value!r:.80} {problem}')


def check_arch(arch, source):
    """`arch` ({'type': 'CiaoSR'|'LIIF', **options}) with `encoder` made explicit, after checking every option.

    The rules follow the constructors' defaults: booleans must be booleans; integers (channels, widths,
    block counts, sizes) whole numbers in [1, MAX_OPTION]; floats finite and in (0, MAX_OPTION]
    (`drop_path_rate` in [0, 1)); tuples lists of at most MAX_LIST such integers; `encoder` one of
    ENCODERS and `encoder_opt` an object of that encoder's options, checked the same way. Raises
    CheckpointError naming `source` and the first refused option (unknown type or option, wrong type,
    negative or absurd size).
    """
    kind = arch.get('type')
    if not isinstance(kind, str) or kind not in ARCHS:
        raise CheckpointError(f'{source}: unknown arch type {kind!r:.80}; expected one of '
                              f'{", ".join(ARCHS)}')
    options = {k: v for k, v in arch.items() if k != 'type'}
    _check_options(options, ARCHS[kind], f'{source}: {kind}')
    encoder = options.setdefault('encoder', inspect.signature(ARCHS[kind]).parameters['encoder'].default)
    _check_options(options.get('encoder_opt') or {}, ENCODERS[encoder], f'{source}: {kind} encoder_opt ({encoder})')
    return {'type': kind, **options}


def build_net(arch):
    """Network (random weights) from an arch dict {'type': ..., **options} that passed `check_arch`."""
    options = dict(arch)
    return ARCHS[options.pop('type')](**options)


class _LinspaceOnCpu(TorchFunctionMode):
    """Inside `torch.device('meta')`: make `torch.linspace` on the CPU. SwinIR reads its per-block drop-path
    rates with `.item()`, which meta tensors cannot do; they are one float per block (bounded by `check_arch`)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.linspace and kwargs.get('device') is None:
            kwargs = {**kwargs, 'device': 'cpu'}
        return func(*args, **kwargs)


def build_skeleton(arch, max_parameters, source):
    """The network of a checked `arch` on the meta device: every shape, no storage.

    Building stops with CheckpointError as soon as the network has more than `max_parameters` parameter
    tensors (pass the file's tensor count: strict loading needs one tensor per parameter), so options
    that declare a huge network cost neither memory nor time. Any other build failure (e.g. an option
    value the constructor rejects) is a CheckpointError naming `source`.
    """
    count = 0

    def count_parameter(module, name, param):
        nonlocal count
        count += 1
        if count > max_parameters:
            raise CheckpointError(f'{source}: its options declare more parameters than the {max_parameters} '
                                  f'tensors it holds')

    handle = register_module_parameter_registration_hook(count_parameter)
    try:
        with torch.device('meta'), _LinspaceOnCpu():
            return build_net(arch)
    except CheckpointError:
        raise
    except Exception as err:  # the constructors' own checks (ValueError, AssertionError ...), shape arithmetic
        raise CheckpointError(f'{source}: cannot build {arch["type"]} from its options '
                              f'({type(err).__name__}: {err})') from None
    finally:
        handle.remove()


def listing(items, limit=8):
    """'a, b, c' for a list of strings: the first `limit`, then '... (N in all)'; 'none' for an empty list."""
    return ', '.join(items[:limit]) + (f' ... ({len(items)} in all)' if len(items) > limit else '') or 'none'


def match_state(state, expected, source, network, strict=True):
    """Raise CheckpointError unless `state` fits `expected` (a state_dict, possibly on the meta device) key by key
    (when `strict`) and shape by shape; the message names `source`, `network` and the missing, unexpected and
    wrongly shaped keys."""
    missing = [k for k in expected if k not in state] if strict else []
    unexpected = [k for k in state if k not in expected] if strict else []
    wrong_shape = [f'{k} {tuple(state[k].shape)} != {tuple(v.shape)}' for k, v in expected.items()
                   if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(f'{source} does not match {network}: missing keys: {listing(missing)}; '
                              f'unexpected keys: {listing(unexpected)}; wrong shapes: {listing(wrong_shape)}')


def check_values(state, expected, source):
    """Raise CheckpointError naming every tensor of `state` that would load wrong into `expected` (a real state_dict).

    Where `expected` holds floats, the file must hold a dense float16/bfloat16/float32/float64 tensor whose values
    are all finite (NaN or +-Inf weights give black images; integer or bool weights are not weights). Any other
    tensor (e.g. SwinIR's relative-position index, computed from the options) must equal the expected one, dtype
    included.
    """
    problems = []
    for key, value in state.items():
        want = expected.get(key)
        if want is None:
            continue
        if value.layout != torch.strided or value.is_meta:
            problems.append(f'{key} is not a dense tensor with data ({value.layout}, {value.device.type})')
        elif not want.is_floating_point():
            if value.dtype != want.dtype or not torch.equal(value, want):
                problems.append(f'{key} ({value.dtype}) differs from the {want.dtype} values its options imply')
        elif value.dtype not in FLOAT_DTYPES:
            problems.append(f'{key} is {str(value.dtype).removeprefix("torch.")}, not float16/bfloat16/float32/float64')
        elif not torch.isfinite(value).all():
            counts = {'NaN': int(value.isnan().sum()), '+Inf': int(value.isposinf().sum()),
                      '-Inf': int(value.isneginf().sum())}
            problems.append(f'{key} has non-finite values (' +
                            ', '.join(f'{n} {kind}' for kind, n in counts.items() if n) + f' of {value.numel()})')
    if problems:
        raise CheckpointError(f'{source}: unusable tensors: {listing(problems)}')


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
    The options (metadata or inferred, plus `overrides`) pass `check_arch`; the network is built on the
    meta device and matched with the file's keys and shapes before it is built for real, so a file
    never makes us allocate more than its own tensors; then the weights must pass `check_values`.
    Any failure is one CheckpointError naming the file and the keys, option or tensors at fault; a `device` that
    is not there (CUDA without a GPU) a ValueError, before the file is read.
    """
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: no CUDA device is available (use device='cpu')")
    path = resolve_weights(path)
    state, arch = read_checkpoint(path)
    if arch is None:
        try:
            arch = infer_arch(state)
        except CheckpointError as err:
            raise CheckpointError(f'{path}: {err}') from None
        except (LookupError, TypeError, ArithmeticError) as err:
            raise CheckpointError(f'{path}: cannot infer the network from its keys ({type(err).__name__}: {err})') \
                from None
    arch = check_arch({**arch, **overrides}, path)
    network = f'{arch["type"]}({arch["encoder"]})'
    match_state(state, build_skeleton(arch, len(state), path).state_dict(), path, network)
    net = build_net(arch)
    check_values(state, net.state_dict(), path)
    net.load_state_dict(state)
    net.arch = arch
    return net.eval().to(device)


@contextmanager
def atomic_file(path):
    """Binary file object for writing `path` all at once: a hidden `.NAME.PID-XXXXXXXX.part` file in the same
    folder (PID: this process), flushed, fsynced and renamed over `path` when the block ends without an error (then
    the folder is fsynced).

    An error or a kill inside the block leaves `path` as it was (absent or the previous complete file); on an
    error the temporary file is removed (a SIGKILL can leave it behind, hidden: see `is_abandoned`). Raises
    OSError if the folder cannot be written.
    """
    path = Path(path)
    temporary = path.with_name(f'.{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part')
    try:
        with open(temporary, 'xb') as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if os.name == 'posix':  # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def is_abandoned(path):
    """Whether `path` is a temporary file of `atomic_file` whose writer is gone: its name has `atomic_file`'s form
    and the process whose id it holds no longer runs on this machine. Anything else, including a file whose writer
    may still run (or whose process id was taken by another process since), is not abandoned. Always False where
    processes cannot be checked without side effects (not POSIX)."""
    match = PARTIAL_FILE.fullmatch(Path(path).name)
    if not match or os.name != 'posix':
        return False
    try:
        os.kill(int(match[1]), 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # another user's process; not a process id: not ours to judge
        pass
    return False


def save_safetensors(net, path, arch, metadata=None, dtype=None):
    """Write net's weights with its arch dict (and free-form string metadata) to a .safetensors file, atomically
    (`atomic_file`); `dtype` (e.g. torch.float16: half the file) converts the floating-point tensors, which load
    back into fp32 networks. The metadata keys 'format' and 'arch' are this function's; OSError if it cannot write."""
    meta = {**{k: str(v) for k, v in (metadata or {}).items()}, 'format': 'pt', 'arch': json.dumps(arch)}
    tensors = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in net.state_dict().items()}
    with atomic_file(path) as file:
        file.write(safetensors_bytes(tensors, metadata=meta))
