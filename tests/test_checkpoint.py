"""Checkpoints: every weights file is loaded right or refused with one CheckpointError naming the
file and the tensor or option at fault; no file makes us allocate more than its own tensors; convert fails in
one line."""
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ciaosr import convert as convert_module
from ciaosr.convert import main as convert
from ciaosr_arch import CheckpointError, CiaoSR, load_model
from ciaosr_arch.checkpoint import read_checkpoint, refuse_foreign
from ciaosr_arch.shipped import SHIPPED_MODELS, resolve_weights

ROOT = Path(__file__).resolve().parent.parent
TENSOR = 'imnet_q.layers.0.weight'  # the tensor the bad-value cases spoil


def tiny(tiny_model):
    """(state_dict, arch) of the session's tiny CiaoSR."""
    return read_checkpoint(tiny_model)


def write(path, state, arch=None):
    """Save `state` as .safetensors (with `arch` metadata) or, for any other suffix, as an official mmediting .pth."""
    if path.suffix.lower() == '.safetensors':
        save_file({k: v.contiguous() for k, v in state.items()}, path, metadata={'arch': json.dumps(arch)})
    else:
        torch.save({'meta': {}, 'state_dict': {f'generator.{k}': v for k, v in state.items()}}, path)
    return path


SPOIL = {
    'nan': lambda w: w.index_put((torch.tensor([0]), torch.tensor([1])), torch.tensor(float('nan'))),
    '+inf': lambda w: w.index_put((torch.tensor([2]),), torch.tensor(float('inf'))),
    '-inf': lambda w: w.index_put((torch.tensor([0]), torch.tensor([0])), torch.tensor(float('-inf'))),
    'int8': lambda w: w.to(torch.int8),
    'int64': lambda w: w.to(torch.int64),
    'bool': lambda w: w > 0,
}
EXPECTED = {'nan': '1 NaN', '+inf': r'\+Inf', '-inf': '1 -Inf', 'int8': 'is int8', 'int64': 'is int64',
            'bool': 'is bool'}


@pytest.mark.parametrize('suffix', ['.safetensors', '.pth'])
@pytest.mark.parametrize('kind', list(SPOIL))
def test_non_finite_and_non_float_weights_are_refused(tiny_model, tmp_path, kind, suffix):
    state, arch = tiny(tiny_model)
    state[TENSOR] = SPOIL[kind](state[TENSOR])
    path = write(tmp_path / f'bad{suffix}', state, arch)
    with pytest.raises(CheckpointError, match=rf'{re.escape(str(path))}: unusable tensors: {TENSOR}.*{EXPECTED[kind]}'):
        load_model(path)


def test_files_that_load_as_more_than_they_hold_or_are_not_state_dicts(tiny_model, tmp_path):
    """A review: a tensor saved expanded (stride 0) declares any size, and a 36 KB file built a 700 MB network;
    float64 weights beyond float32 loaded as +Inf; integer keys raised AttributeError; 'generator.module.' keys
    were not stripped."""
    state, _ = tiny(tiny_model)
    weight = state[TENSOR]
    expanded = dict(state, **{TENSOR: weight.flatten()[:1].clone().expand(weight.shape)})
    with pytest.raises(CheckpointError, match=r'its tensors declare [\d.]+ KiB of weights but the file stores [\d.]+ '
                                              r'KiB \(expanded, overlapping or sparse tensors\)'):
        load_model(write(tmp_path / 'expanded.pth', expanded))
    huge = dict(state, **{TENSOR: weight.double().index_put((torch.tensor([0]), torch.tensor([0])),
                                                            torch.tensor(1e300, dtype=torch.float64))})
    with pytest.raises(CheckpointError, match=f'unusable tensors: {TENSOR} has non-finite values \\(1 \\+Inf of'):
        load_model(write(tmp_path / 'huge.pth', huge))
    torch.save({1: torch.zeros(1), 'a': torch.zeros(1)}, tmp_path / 'numbered.pth')
    with pytest.raises(CheckpointError, match=r"not a state_dict: its keys must be names, got 1 \(int\)"):
        load_model(tmp_path / 'numbered.pth')
    torch.save({'state_dict': {f'generator.module.{k}': v for k, v in state.items()}}, tmp_path / 'wrapped.pth')
    assert load_model(tmp_path / 'wrapped.pth').state_dict().keys() == state.keys()


def test_files_are_read_by_what_they_hold_and_named_when_they_cannot_be(tiny_model, tmp_path, monkeypatch):
    """A review: a safetensors file named .pth was refused as 'Python objects that could run code', one with a name
    that is not UTF-8 as unreadable, an unreadable one as missing; a text file gave 'KeyError: 101', a fifo 'not
    found' (and reading it would block); a folder named like a shipped model (-o real) hid the model."""
    content = tiny_model.read_bytes()
    for name in ('as.pth', os.fsdecode(b'\xff\xfe.safetensors')):
        (tmp_path / name).write_bytes(content)
        assert load_model(tmp_path / name).arch == load_model(tiny_model).arch
    (tmp_path / 'notes.pth').write_text('hello')
    os.mkfifo(tmp_path / 'fifo.pth')
    for path, message in ((tmp_path / 'notes.pth', r"not a PyTorch \(\.pth\) or safetensors file \(it starts with "
                                                   r"b'hello'\)$"),
                          (tmp_path / 'fifo.pth', 'is not a regular file')):
        with pytest.raises(CheckpointError, match=message):
            load_model(path)

    def denied(path, mode='r', *args, **kwargs):
        raise PermissionError(13, 'Permission denied', str(path))
    monkeypatch.setattr('builtins.open', denied)  # (as root, a mode-000 file would be read)
    with pytest.raises(CheckpointError, match=r'as.pth: cannot be read \(Permission denied\)$'):
        load_model(tmp_path / 'as.pth')
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'real').mkdir()
    assert resolve_weights('real') == SHIPPED_MODELS['real'].path
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N': the networks run there, got "
                                         "'meta'"):
        load_model(tiny_model, device='meta')


def test_convert_never_writes_over_a_file_and_never_writes_infinities(tiny_model, tmp_path, monkeypatch, capsys):
    """A review: a file created while the model loaded was overwritten; --fp16 wrote weights beyond 65504 as Inf (a
    file that then failed to load) with exit 0; --meta before the paths took them as its values; a name of 230
    characters was too long for the temporary file."""
    out = tmp_path / 'out.safetensors'
    load = convert_module.load_model

    def racing(path):
        out.write_bytes(b'another writer')
        return load(path)
    monkeypatch.setattr(convert_module, 'load_model', racing)
    with pytest.raises(SystemExit, match='out.safetensors was created while converting; remove it first'):
        convert([str(tiny_model), str(out)])
    assert out.read_bytes() == b'another writer' and len(list(tmp_path.iterdir())) == 1
    monkeypatch.undo()

    state, arch = tiny(tiny_model)
    big = write(tmp_path / 'big.safetensors', dict(state, **{TENSOR: state[TENSOR] * 0 + 1e5}), arch)
    with pytest.raises(SystemExit, match=f'float16 cannot hold the weights of {TENSOR} \\(values beyond its range\\)'):
        convert([str(big), str(tmp_path / 'big16.safetensors'), '--fp16'])
    assert not (tmp_path / 'big16.safetensors').exists()

    long_name = tmp_path / ('a' * 230 + '.safetensors')
    convert(['--meta', 'data=T91', '--meta', os.fsdecode(b'note=\xff'), str(tiny_model), str(long_name)])
    with safe_open(str(long_name), 'pt') as f:
        assert f.metadata()['data'] == 'T91' and f.metadata()['note'] == '\\xff'
    assert load_model(long_name).arch == load_model(tiny_model).arch


@pytest.mark.parametrize('keys', [['imnet_q.layers.0.weight'], ['imnet_q.layers.2.weight'], ['imnet_k.layers.0.weight'],
                                  ['body.0.conv1.weight'], ['conv_first.weight'], ['cs_attn.down.weight'],
                                  ['body.0.conv1.weight', 'body.0.conv1.bias', 'body.0.conv2.weight'],
                                  ['imnet_q.layers.0.weight', 'imnet_q.layers.0.bias']])
def test_missing_keys_are_named(tiny_model, tmp_path, keys):
    """A review: of the default model's 110 keys, 8 removed one at a time gave messages that did not name them
    ('no imnet_q/imnet_k or imnet keys', 'missing keys: none; unexpected keys: body.15.conv1.bias, ...'): the
    options were read off the keys there, counting blocks and layers instead of taking the largest index; and
    without a whole layer the skeleton of those options outgrew the file ('declare more parameters than ...')."""
    state, arch = tiny(tiny_model)
    for key in keys:
        del state[key]
    with pytest.raises(CheckpointError, match=re.escape(keys[0])):
        load_model(write(tmp_path / 'incomplete.pth', state))


def test_half_precision_weights_load(tiny_model, tmp_path):
    state, arch = tiny(tiny_model)
    half = write(tmp_path / 'half.safetensors', {k: v.half() for k, v in state.items()}, arch)
    expected = {k: v.half().float() for k, v in state.items()}
    for key, value in load_model(half).state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


def arch_with(arch, **changes):
    """`arch` with top-level changes; encoder_opt entries are given as enc_NAME=value."""
    arch = json.loads(json.dumps(arch))
    for key, value in changes.items():
        if key.startswith('enc_'):
            arch['encoder_opt'][key[4:]] = value
        else:
            arch[key] = value
    return json.dumps(arch)


MALFORMED = {  # name -> (metadata 'arch' from the tiny arch, expected message)
    'not json': (lambda a: 'CiaoSR(encoder=edsr)', 'not valid JSON'),
    'deeply nested': (lambda a: '[' * 100_000 + ']' * 100_000, 'not valid JSON'),
    'a list': (lambda a: '[1, 2]', 'must be a JSON object, got list'),
    'a string': (lambda a: '"CiaoSR"', 'must be a JSON object, got str'),
    'unknown type': (lambda a: arch_with(a, type='SwinIRNet'), "unknown arch type 'SwinIRNet'"),
    'no type': (lambda a: json.dumps({k: v for k, v in a.items() if k != 'type'}), 'unknown arch type None'),
    'unknown encoder': (lambda a: arch_with(a, encoder='vgg19'), 'option encoder .* must be one of'),
    'unknown option': (lambda a: arch_with(a, upsampler='pixelshuffle'), "unknown option 'upsampler'"),
    'unknown encoder option': (lambda a: arch_with(a, enc_depth=3), "encoder_opt .*unknown option 'depth'"),
    'encoder_opt not an object': (lambda a: arch_with(a, encoder_opt=[16, 1]), 'encoder_opt .* must be an object'),
    'negative size': (lambda a: arch_with(a, enc_num_feat=-16), 'num_feat = -16 must be an integer'),
    'zero size': (lambda a: arch_with(a, enc_num_block=0), 'num_block = 0 must be an integer'),
    'absurd size': (lambda a: arch_with(a, enc_num_feat=10 ** 12), 'num_feat = 1000000000000 must be an integer'),
    'size as string': (lambda a: arch_with(a, enc_num_feat='16'), "num_feat = '16' must be an integer"),
    'size as float': (lambda a: arch_with(a, enc_num_feat=16.0), 'num_feat = 16.0 must be an integer'),
    'size as bool': (lambda a: arch_with(a, enc_num_feat=True), 'num_feat = True must be an integer'),
    'flag as int': (lambda a: arch_with(a, feat_unfold=1), 'feat_unfold = 1 must be true or false'),
    'nan float': (lambda a: arch_with(a, softmax_scale=float('nan')), 'softmax_scale = nan must be a finite'),
    'zero float': (lambda a: arch_with(a, softmax_scale=0), 'softmax_scale = 0 must be a finite'),
    'widths not a list': (lambda a: arch_with(a, decoder_hidden='wide'), 'decoder_hidden .* must be a list'),
    'too many layers': (lambda a: arch_with(a, decoder_hidden=[16] * 1000), 'decoder_hidden .* must be a list'),
    'negative width': (lambda a: arch_with(a, key_hidden=[-32]), 'key_hidden .* must be a list'),
    'bad local size': (lambda a: arch_with(a, local_size=5), 'cannot build CiaoSR .*local_size'),
    'sizes of another net': (lambda a: arch_with(a, enc_num_feat=24),
                             r'does not match CiaoSR\(edsr_baseline\).*wrong shapes: imnet_q\.layers\.0\.weight '
                             r'\(32, 160\) != \(32, 240\)'),
    'more blocks than tensors': (lambda a: arch_with(a, enc_num_block=64), 'more parameters than the 32 tensors'),
}


@pytest.mark.parametrize('case', list(MALFORMED))
def test_malformed_metadata_is_refused(tiny_model, tmp_path, case):
    state, arch = tiny(tiny_model)
    make, message = MALFORMED[case]
    path = tmp_path / 'bad.safetensors'
    save_file(state, path, metadata={'arch': make(arch)})
    with pytest.raises(CheckpointError, match=message) as err:
        load_model(path)
    assert str(err.value).startswith(str(path)) and '\n' not in str(err.value)


BOMB_SCRIPT = r'''
import json, resource, sys, time
import ciaosr_arch
from ciaosr_arch import CheckpointError, load_model
with open('/proc/self/status') as f:
    size_kb = int(next(line for line in f if line.startswith('VmSize:')).split()[1])
limit = size_kb * 1024 + 1024 ** 3  # 1 GiB of address space beyond what the imports mapped
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = {}
for path in sys.argv[1:]:
    start = time.perf_counter()
    try:
        load_model(path)
        outcome = 'loaded'
    except CheckpointError as err:
        outcome = 'CheckpointError: ' + str(err)
    except BaseException as err:
        outcome = type(err).__name__ + ': ' + str(err)[:200]
    results[path] = [outcome, time.perf_counter() - start]
grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({'results': results, 'grown_mb': grown_mb}))
'''


def test_files_declaring_huge_networks_are_refused_without_allocating(tmp_path):
    # The metadata_bomb case: a tiny CiaoSR (8 channels, 1 block) whose metadata claims 4096 channels / 64 blocks
    # (about 80 GB of weights), and the same lie with one block (no parameter-count guard: shapes decide).
    arch = {'type': 'CiaoSR', 'encoder': 'edsr_baseline', 'encoder_opt': {'num_feat': 8, 'num_block': 1},
            'decoder_hidden': [16], 'key_hidden': [16], 'value_hidden': [16]}
    torch.manual_seed(0)
    net = CiaoSR(**{k: v for k, v in arch.items() if k != 'type'})
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    bomb = tmp_path / 'metadata_bomb.safetensors'
    save_file(state, bomb, metadata={'arch': json.dumps(dict(arch, encoder_opt={'num_feat': 4096, 'num_block': 64}))})
    wide = tmp_path / 'wide.safetensors'
    save_file(state, wide, metadata={'arch': json.dumps(dict(arch, encoder_opt={'num_feat': 60000, 'num_block': 1}))})
    # A .pth has no metadata: its arch is inferred from shapes. A 1-D conv_first.weight of 60000 numbers makes
    # num_feat 60000 (a 130 GB network), which the shapes of the other tensors then contradict.
    inferred = dict(state, **{'conv_first.weight': torch.zeros(60000)})
    pth = tmp_path / 'inferred_wide.pth'
    torch.save({'state_dict': {f'generator.{k}': v for k, v in inferred.items()}}, pth)
    files = [str(bomb), str(wide), str(pth)]
    result = subprocess.run([sys.executable, '-c', BOMB_SCRIPT, *files], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    for path in files:
        outcome, seconds = report['results'][path]
        assert outcome.startswith(f'CheckpointError: {path}'), outcome
        assert seconds < 10, (path, seconds)
    assert 'more parameters than the 32 tensors' in report['results'][str(bomb)][0]
    assert 'wrong shapes: imnet_q.layers.0.weight (16, 80) != (16, 600000)' in report['results'][str(wide)][0]
    assert 'wrong shapes' in report['results'][str(pth)][0]
    assert report['grown_mb'] < 300, report


def test_file_names_match_case_insensitively(tiny_model, tmp_path):
    state, arch = tiny(tiny_model)
    expected = load_model(tiny_model).state_dict()
    upper = write(tmp_path / 'tiny.SAFETENSORS', state, arch)
    mixed = tmp_path / 'tiny.Pth'
    torch.save({'params_ema': state}, mixed)
    shouting = tmp_path / 'tiny.PTH'
    torch.save({'params': state}, shouting)
    out = tmp_path / 'converted.SafeTensors'
    convert([str(shouting), str(out)])
    for path in (upper, mixed, shouting, out):
        for key, value in load_model(path).state_dict().items():
            assert torch.equal(value, expected[key]), (path, key)


def test_convert_fp16_halves_the_file_and_loads_into_fp32(tiny_model, tmp_path):
    full, half = tmp_path / 'full.safetensors', tmp_path / 'half.safetensors'
    convert([str(tiny_model), str(full)])
    convert([str(tiny_model), str(half), '--fp16'])
    assert half.stat().st_size < 0.6 * full.stat().st_size
    reference = load_model(full).state_dict()
    for key, value in load_model(half).state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, reference[key].half().float()), key


@pytest.fixture
def nan_checkpoint(tiny_model, tmp_path):
    state, arch = tiny(tiny_model)
    state[TENSOR] = SPOIL['nan'](state[TENSOR])
    return write(tmp_path / 'nan.pth', state)


def test_convert_failures_are_one_line(tiny_model, nan_checkpoint, tmp_path, monkeypatch, capsys):
    (tmp_path / 'taken.safetensors').write_bytes(b'x')
    (tmp_path / 'a_file').write_bytes(b'x')
    good = str(tiny_model)
    cases = [  # (argv, exit status: 2 for a bad command line, 1 for files that cannot be used, message)
        ([good, str(tmp_path / 'taken.safetensors')], 1, 'taken.safetensors exists'),
        ([good, str(tmp_path / 'out.pth')], 2, 'the output must end in .safetensors'),
        ([good, str(tmp_path / 'missing' / 'out.safetensors')], 1, 'folder .*missing does not exist'),
        ([good, str(tmp_path / 'a_file' / 'out.safetensors')], 1, 'folder .*a_file does not exist or is not a folder'),
        ([good, str(tmp_path / 'out.safetensors'), '--meta', 'nokey'], 2, "KEY=VALUE pairs, got 'nokey'"),
        ([good, str(tmp_path / 'out.safetensors'), '--meta', '=x'], 2, "KEY=VALUE pairs, got '=x'"),
        ([good, str(tmp_path / 'out.safetensors'), '--meta', 'arch={}'], 2, 'arch=... is reserved'),
        ([str(nan_checkpoint), str(tmp_path / 'out.safetensors')], 1, f'unusable tensors: {TENSOR} has non-finite'),
        ([str(tmp_path / 'nope.pth'), str(tmp_path / 'out.safetensors')], 1, 'checkpoint not found'),
    ]
    for argv, status, message in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            convert(argv)
        code = exit_.value.code  # status 2: the line is printed first; else Python prints the message, status 1
        text = capsys.readouterr().err.removesuffix('\n') if code == 2 else code
        assert (code if code == 2 else 1) == status, (argv, code)
        assert isinstance(text, str) and text.startswith('error: ') and '\n' not in text, (argv, text)
        assert re.search(message, text), (argv, text)
    assert not (tmp_path / 'out.safetensors').exists()

    def unwritable(*args, **kwargs):
        raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr('ciaosr.convert.save_safetensors', unwritable)
    with pytest.raises(SystemExit, match=r'^error: cannot write .*out.safetensors: Permission denied$'):
        convert([good, str(tmp_path / 'out.safetensors')])


def test_convert_cli_prints_one_line_and_no_traceback(nan_checkpoint, tmp_path, capsys):
    argv = [sys.executable, '-m', 'ciaosr.convert', str(nan_checkpoint), str(tmp_path / 'out.safetensors')]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 1 and result.stderr.count('\n') == 1, result.stderr
    assert result.stderr.startswith(f'error: {nan_checkpoint}: unusable tensors: {TENSOR} has non-finite values')
    with pytest.raises(SystemExit) as exit_:  # a bad command line: one line too, status 2
        convert([])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith('error: the following arguments are required')


def test_convert_writes_metadata_and_no_temporary_files(tiny_model, tmp_path):
    out = tmp_path / 'out.safetensors'
    convert([str(tiny_model), str(out), '--meta', 'data=T91', '--meta', 'note=a=b'])
    with safe_open(str(out), 'pt') as f:
        meta = f.metadata()
    assert meta['data'] == 'T91' and meta['note'] == 'a=b' and json.loads(meta['arch'])['type'] == 'CiaoSR'
    assert [p.name for p in tmp_path.iterdir()] == ['out.safetensors']


def test_load_model_on_a_missing_cuda_device_says_so(monkeypatch):
    """14-api-unchecked-arguments: PyTorch's 'Found no NVIDIA driver' came out of load_model(device='cuda')."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(ValueError, match="device 'cuda': no CUDA device is available"):
        load_model(device='cuda')
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N' \\(a torch.device\\), got 'gpu'"):
        load_model(device='gpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # a review: cuda:3 on a 1-GPU machine read the
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)  # file and built the net, then failed in PyTorch
    with pytest.raises(ValueError, match=r"device 'cuda:3': no such GPU \(1 visible, numbered from 0\)"):
        load_model('no such file', device='cuda:3')


def test_files_that_are_no_checkpoint_say_what_they_are(tmp_path):
    """A trial's cases: an empty .pth said 'EOFError: ' (nothing after it), a folder 'not found' (a state_dict of
    no known encoder: `test_network.test_bad_checkpoints_fail_clearly_and_run_nothing`)."""
    (tmp_path / 'empty.pth').write_bytes(b'')
    for path, message in ((tmp_path / 'empty.pth', 'cannot be loaded as plain weights: the file is empty$'),
                          (tmp_path, 'is a folder: give a checkpoint file in it, or the name of a shipped model: ')):
        with pytest.raises(CheckpointError, match=message):
            load_model(path)


def foreign_networks():
    """[(what the message names, state_dict)] of small whole super-resolution networks in their own key layouts:
    BasicSR's archs, the official RCAN as spandrel builds it, and the official EDSR's keys."""
    from basicsr.archs.edsr_arch import EDSR
    from basicsr.archs.rcan_arch import RCAN
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from basicsr.archs.srvgg_arch import SRVGGNetCompact
    from basicsr.archs.swinir_arch import SwinIR
    official_rcan = importlib.import_module('spandrel.architectures.RCAN.__arch.rcan_arch').RCAN
    official_edsr = ['sub_mean', 'add_mean', 'head.0', 'body.0.body.0', 'body.0.body.2', 'body.1', 'tail.0.0', 'tail.1']
    return [('an RRDBNet (ESRGAN / Real-ESRGAN)', RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=4).state_dict()),
            ('an SRVGGNetCompact', SRVGGNetCompact(num_feat=8, num_conv=2).state_dict()),
            ('a SwinIR', SwinIR(img_size=8, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
                                upsampler='pixelshuffle').state_dict()),
            ('an EDSR', EDSR(3, 3, num_feat=8, num_block=1, upscale=2).state_dict()),
            ('an EDSR', {f'{name}.weight': torch.zeros(1) for name in official_edsr}),
            ('an RCAN', RCAN(3, 3, num_feat=8, num_group=1, num_block=1, squeeze_factor=4, upscale=2).state_dict()),
            ('an RCAN', official_rcan(n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4, scale=2).state_dict())]


def test_other_super_resolution_networks_are_named(tmp_path, shared_data):
    """15-foreign-checkpoint-messages: Real-ESRGAN weights as --model said 'unknown encoder' (or, for a .safetensors
    with a text 'arch' entry, 'not valid JSON'): every common whole SR network is named."""
    for what, state in foreign_networks():
        path = tmp_path / 'other.safetensors'
        save_file({k: v.contiguous() for k, v in state.items()}, path)
        with pytest.raises(CheckpointError, match=f'other.safetensors: this is {re.escape(what)}.* checkpoint, not a '
                                                   'CiaoSR one'):
            load_model(path)
    real_esrgan = shared_data.parent / 'models' / 'RealESRGAN_x4plus.safetensors'  # metadata 'arch' is not JSON
    torch.save({'params_ema': load_file(real_esrgan)}, tmp_path / 'RealESRGAN_x4plus.pth')
    for path in (real_esrgan, tmp_path / 'RealESRGAN_x4plus.pth'):
        with pytest.raises(CheckpointError, match=r'this is an RRDBNet \(ESRGAN / Real-ESRGAN\) checkpoint, not a '
                                                   'CiaoSR one'):
            load_model(path)


def test_a_ciaosr_with_an_rrdb_trunk_is_not_taken_for_an_rrdbnet(tiny_model):
    """A CiaoSR encoder may be an RRDB trunk (conv_first, body.N.rdb*, conv_body): with CiaoSR head keys it is
    never refused as a foreign RRDBNet, nor is a file with an RRDBNet's upsampler keys and a CiaoSR head."""
    from basicsr.archs.rrdbnet_arch import RRDBNet
    head = {k: v for k, v in load_file(tiny_model).items() if k.startswith('imnet')}
    rrdbnet = RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=4).state_dict()
    trunk = {k: v for k, v in rrdbnet.items() if not k.startswith(('conv_up', 'conv_hr', 'conv_last'))}
    for state in ({**trunk, **head}, {**rrdbnet, **head}):
        refuse_foreign(state, 'ciaosr_rrdb.safetensors')  # raises nothing


def test_a_pickle_with_code_gets_our_message(tmp_path):
    class Payload:
        def __reduce__(self):
            return os.system, (f'touch {tmp_path / "ran"}',)
    torch.save({'params': Payload()}, tmp_path / 'downloaded.pth')
    with pytest.raises(CheckpointError) as refused:
        load_model(tmp_path / 'downloaded.pth')
    assert str(refused.value) == (f'{tmp_path / "downloaded.pth"}: cannot be loaded as plain weights: it holds Python '
                                  'objects besides tensors, which could run code when loaded, or is not a PyTorch '
                                  'file at all; nothing in it was run (only .safetensors files and .pth files of '
                                  'tensors are loaded)')
    assert not (tmp_path / 'ran').exists()
