"""The runtimes (ciaosr_arch.runtimes): the protocol and PyTorch's runtime every net is built with, OpenVINO's (the
same result as PyTorch, its caches, the int8 decode), and the choice of runtime (ciaosr_arch.runtime).

Tests that run OpenVINO are skipped where it is not installed (CI runs with and without it); the choice of
runtime is tested either way.
"""
import copy
from pathlib import Path

import pytest
import torch

from ciaosr import upscale
from ciaosr.cli import cpu_path_line
from ciaosr_arch import load_model, super_resolve
from ciaosr_arch.archs.coords import axis_centres
from ciaosr_arch.emulation import emulation_env
from ciaosr_arch.engine import _decode_grid
from ciaosr_arch.errors import error_line
from ciaosr_arch.runtime import (
    CPU_KINDS,
    CPU_PLANS,
    cpu_flags,
    cpu_kind,
    openvino_version,
    use_runtime,
)
from ciaosr_arch.runtimes.base import CACHE_QUERIES, CALL_QUERIES, DecodeRuntime, TorchRuntime
from ciaosr_arch.runtimes.int8 import calibrate, fake_quantized, int8_layers
from ciaosr_arch.runtimes.openvino import OpenVINORuntime, import_openvino

needs_openvino = pytest.mark.skipif(openvino_version() is None,
                                    reason='OpenVINO is not installed (pip install openvino==2026.4.1)')


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh graph cache folder for the test (CIAOSR_CACHE_DIR)."""
    monkeypatch.setenv('CIAOSR_CACHE_DIR', str(tmp_path / 'cache'))
    return tmp_path / 'cache' / 'openvino'


def lr_image(h=13, w=17):
    torch.manual_seed(1)
    return torch.rand(1, 3, h, w)


def pytorch_then_openvino(model, scale=4, bf16=False, **tiling):
    """(the net, now on OpenVINO; its PyTorch fp32 output; its OpenVINO output, under bf16 autocast if `bf16`) for
    the checkpoint `model` on lr_image() at `scale`, with super_resolve's `tiling` keywords."""
    net, lr = load_model(model), lr_image()
    with torch.no_grad():
        reference = super_resolve(net, lr, scale, **tiling)
        assert use_runtime(net, 'openvino') == 'openvino'
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            return net, reference, super_resolve(net, lr, scale, **tiling)


@needs_openvino
@pytest.mark.parametrize('scale,tile', [(4, 0), (1.5, 0), (3.3, 9)])  # with/without pair table; tiled
def test_openvino_fp32_equals_pytorch(tiny_model, cache, scale, tile):
    _, reference, out = pytorch_then_openvino(tiny_model, scale, tile=tile, tile_overlap=4)
    assert (out - reference).abs().max() <= 1e-5


@needs_openvino
def test_blocks_padding_and_batch(tiny_model, cache):
    """Any number of queries: whole blocks, a padded last block, a batch of two images."""
    net = load_model(tiny_model)
    lr = torch.cat([lr_image(), lr_image().flip(-1)])
    rows, cols = axis_centres(40), axis_centres(45)
    cells = lr.new_tensor([2 / 40, 2 / 45]).expand(2, 2)
    with torch.no_grad():
        bank = net.encode(lr, (40, 45))
        reference = _decode_grid(net, bank, rows, cols, cells, 1800, lambda n: None)
        net.runtime = OpenVINORuntime(net, block=256)
        out = _decode_grid(net, bank, rows, cols, cells, 1800, lambda n: None)  # 7 blocks + 8 queries per chunk
    assert (out - reference).abs().max() <= 1e-5


@needs_openvino
def test_graph_cache_is_reused(tiny_model, cache, monkeypatch):
    """The converted graphs are saved once; a new process (here: a new runtime) reads them instead of converting."""
    net = load_model(tiny_model)
    lr = lr_image()
    hashed, state_dict = [0], net.state_dict
    net.state_dict = lambda: hashed.__setitem__(0, hashed[0] + 1) or state_dict()  # what the fingerprint hashes
    with torch.no_grad():
        use_runtime(net, 'openvino')
        first = super_resolve(net, lr, 4)
        saved = sorted(p.name for p in cache.iterdir())
        assert [name.rsplit('-', 1)[0] for name in saved[::2]] == ['attend-pair', 'pair_rows', 'paste']
        assert all(name.endswith(('.bin', '.xml')) for name in saved) and len(saved) == 6  # no temporary left

        assert hashed == [3]  # the weights' fingerprint, once per converted graph (the first one was hashed twice)
        monkeypatch.setattr(import_openvino(), 'convert_model', lambda *a, **k: pytest.fail('converted again'))
        net.runtime = OpenVINORuntime(net)
        assert torch.equal(super_resolve(net, lr, 4), first)
        other = load_model(tiny_model)  # different weights: a graph of their own
        with torch.no_grad():
            for p in other.imnet_q.parameters():
                p.mul_(2)
        other.runtime = OpenVINORuntime(other)
        with pytest.raises(pytest.fail.Exception, match='converted again'):
            super_resolve(other, lr, 4)


@pytest.mark.parametrize('message, line', [
    ('Exception from src/inference/src/cpp/core.cpp:84:\nCheck \'util::file_exists(path)\' failed at '
     'src/frontends/common/src/frontend.cpp:117:\nFrontEnd API failed with GeneralFailure:\nir: Could not open the '
     'file: "m.xml"\n\n', 'FrontEnd API failed with GeneralFailure: ir: Could not open the file: "m.xml"'),
    ('Error(s) in loading state_dict for CiaoSR:\n\tMissing key(s) in state_dict: "a".',
     'Error(s) in loading state_dict for CiaoSR: Missing key(s) in state_dict: "a".'),
    ('bad image\nmore detail', 'bad image'), ('', '')])
def test_error_line(message, line):
    """One line of a library's error: OpenVINO's (C++ source locations first, the reason last) and PyTorch's."""
    assert error_line(RuntimeError(message)) == line
    assert error_line(RuntimeError(message), named=True) == f'RuntimeError: {line}'


@needs_openvino
def test_a_graph_is_cached_under_the_weights_it_was_traced_from(tiny_model, cache):
    """A review: a runtime named every graph after the weights of its first conversion, so a graph converted after
    the weights changed was saved under the first weights' name, and other processes with those read it."""
    net, lr = load_model(tiny_model), lr_image()
    with torch.no_grad():
        use_runtime(net, 'openvino')
        super_resolve(net, lr, 4)  # graphs of the file's weights
        for p in net.imnet_q.parameters():
            p.mul_(2)
        super_resolve(net, lr, 1.5)  # a graph converted after the change
        fresh = load_model(tiny_model)  # the file's weights, as another process has them
        reference = super_resolve(fresh, lr, 1.5)
        use_runtime(fresh, 'openvino')
        assert (super_resolve(fresh, lr, 1.5) - reference).abs().max() <= 1e-5


@needs_openvino
def test_float16_autocast_and_copies(tiny_model, cache):
    """Under a CPU float16 autocast the encode's tables are float16, which OpenVINO takes (its arithmetic in fp32);
    `copy.deepcopy` of a net on OpenVINO (an EMA copy, a user's) gives a copy with a runtime of its own."""
    net, reference, _ = pytorch_then_openvino(tiny_model)
    lr = lr_image()
    with torch.no_grad():
        with torch.autocast('cpu', dtype=torch.float16):
            half = super_resolve(net, lr, 4)
        assert 10 * torch.log10(1 / ((half - reference) ** 2).mean()) >= 45
        twin = copy.deepcopy(net)
        assert isinstance(twin.runtime, OpenVINORuntime) and twin.runtime.net is twin and net.runtime.net is net
        assert (super_resolve(twin, lr, 4) - reference).abs().max() <= 1e-5


@needs_openvino
def test_openvino_bf16_close_to_fp32(tiny_model, cache):
    """bf16 (autocast) on OpenVINO: PSNR >= 45 dB against fp32."""
    _, reference, out = pytorch_then_openvino(tiny_model, bf16=True)
    mse = ((out - reference) ** 2).mean()
    assert 10 * torch.log10(1 / mse) >= 45


# Run in a fresh process: converting the full-size model's graphs leaves the test process some 400 MB larger, which
# the CLI tests that follow would count against their memory budget.
INT8_PHOTO_CHECK = """
import json, sys, torch
from ciaosr.cli import cpu_has_bf16
from ciaosr.image_io import read_image
from ciaosr_arch import load_model, super_resolve
from ciaosr_arch.runtime import use_runtime
from ciaosr_arch.runtimes.int8 import int8_layers
scale = float(sys.argv[1])
pixels = read_image(sys.argv[2]).pixels[:32, :32, :3]
lr = torch.from_numpy(pixels.astype('float32') / 255).permute(2, 0, 1)[None].contiguous()
net = load_model('default')
with torch.no_grad():
    reference = super_resolve(net, lr, scale)
    use_runtime(net, 'openvino', int8=True)
    out = super_resolve(net, lr, scale)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=cpu_has_bf16()):  # as the CLI runs it on this CPU
        out_bf16 = super_resolve(net, lr, scale)
    request = next(reversed(net.runtime.compiled.values()))
    ops = [op.get_rt_info() for op in request.get_compiled_model().get_runtime_model().get_ordered_ops()]
    restored = all('forward' not in vars(layer) for layer in int8_layers(net))
    use_runtime(net, 'torch')
    print(json.dumps({
        'psnr': [float(10 * torch.log10(1 / (o - reference).square().mean())) for o in (out, out_bf16)],
        'u8_products': sum(op['layerType'].astype(str).startswith('FullyConnected')
                           and op['runtimePrecision'].astype(str) == 'u8' for op in ops),
        'restored': restored and bool((super_resolve(net, lr, scale) - reference).abs().max() <= 1e-5)}))
"""


@needs_openvino
@pytest.mark.parametrize('scale,products', [(4, 7), (1.5, 8)])  # with the pair table; without (+ the key net's head)
def test_int8_decode_on_a_photo(cache, scale, products):
    """The opt-in int8 decode, shipped default model, a 32 x 32 crop of a demo photo (not among the calibration
    crops): its products run in uint8 x int8 on OpenVINO (the key and value nets after their first layer; the key
    net's output layer is in the pair table at x4), PSNR >= 45 dB against PyTorch fp32 (also under bf16 autocast
    where the CPU has bf16, as the CLI runs it), and the PyTorch model is left as it was (the fake-quantized forward
    is gone, and its output is the first run's within float rounding, 1e-5, far below the int8 error: MKL's fp32
    products need not repeat bit for bit, and under the emulated AVX2 CPU once did not)."""
    import json
    import subprocess
    import sys

    photo = Path(__file__).parents[1] / 'inputs' / 'building_crop128.png'
    done = subprocess.run([sys.executable, '-c', INT8_PHOTO_CHECK, str(scale), str(photo)], check=True,
                          capture_output=True, text=True, timeout=600)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result['u8_products'] == products and result['restored']
    assert min(result['psnr']) >= 45, result['psnr']


def test_int8_calibration(tiny_model, tmp_path):
    """Calibration: the largest input of every int8 layer, positive and the same on every run; a folder without
    images is refused (a layer that never ran would have no range)."""
    net = load_model(tiny_model)
    tops = calibrate(net)
    assert len(tops) == len(int8_layers(net)) == 2 and min(tops) > 0 and tops == calibrate(net)  # 1 hidden layer
    with pytest.raises(ValueError, match='did not run every int8 layer'):
        calibrate(net, tmp_path)


def test_fake_quantized_restores_the_layers(tiny_model):
    """The fake-quantized forward is in place only within the block, and gone after an error in it."""
    net = load_model(tiny_model)
    layers = int8_layers(net)
    with pytest.raises(RuntimeError, match='conversion failed'):
        with fake_quantized(layers, [1.0] * len(layers)):
            assert all('forward' in vars(layer) for layer in layers)
            raise RuntimeError('conversion failed')
    assert all('forward' not in vars(layer) for layer in layers)


@needs_openvino
def test_int8_calibrates_once_and_refuses_a_missing_calibration(tiny_model, cache, tmp_path, monkeypatch):
    """One calibration per runtime for both decode graphs (with and without the pair table), run on the runtime's
    threads although the decode runs PyTorch on one; no calibration crops: refused before any work."""
    from ciaosr_arch import runtime
    from ciaosr_arch.runtimes import openvino
    net, calls = load_model(tiny_model), []

    def counted(model):
        calls.append(torch.get_num_threads())
        return calibrate(model)
    monkeypatch.setattr(openvino, 'calibrate', counted)
    use_runtime(net, 'openvino', int8=True, threads=2)
    with torch.no_grad():
        super_resolve(net, lr_image(), 1.5)
        super_resolve(net, lr_image(), 4)
    assert {'attend-plain-int8', 'attend-pair-int8'} <= set(net.runtime.models) and calls == [2]
    monkeypatch.setattr(runtime, 'CALIBRATION_DIR', tmp_path)
    with pytest.raises(RuntimeError, match='no calibration crops'):
        use_runtime(net, 'openvino', int8=True)


@needs_openvino
def test_decoding_runs_pytorch_on_one_thread_and_restores_it(tiny_model, cache, monkeypatch):
    """Within the engine's decode on OpenVINO PyTorch has one thread; afterwards, even after an error, its own."""
    net, seen = load_model(tiny_model), []
    use_runtime(net, 'openvino')
    threads = torch.get_num_threads()

    def failing_decode(*args):
        seen.append(torch.get_num_threads())
        raise RuntimeError('decode failed')
    monkeypatch.setattr(net, 'decode', failing_decode)
    with pytest.raises(RuntimeError, match='decode failed'), torch.no_grad():
        super_resolve(net, lr_image(), 2)
    assert seen == [1] and torch.get_num_threads() == threads


def test_int8_needs_openvino(tiny_model, tmp_path, monkeypatch, capsys):
    """int8 where OpenVINO does not run it (--runtime torch, or not installed): one clear error, exit 2 in the CLI."""
    monkeypatch.setattr('ciaosr_arch.runtime.cpu_kind', lambda: 'avx512-bf16')  # a CPU where --int8 is offered
    net = load_model(tiny_model)
    with pytest.raises(RuntimeError, match='int8 runs on OpenVINO only: the runtime is torch'):
        use_runtime(net, 'torch', int8=True)
    src = tmp_path / 'in.png'
    from PIL import Image
    Image.new('RGB', (6, 5), (200, 100, 50)).save(src)
    args = ['-i', str(src), '-o', str(tmp_path / 'out'), '-s', '2', '--model', str(tiny_model), '--int8',
            '--device', 'cpu']
    assert upscale.main(args + ['--runtime', 'torch']) == 2
    assert 'int8 runs on OpenVINO only' in capsys.readouterr().err
    monkeypatch.setattr('ciaosr_arch.runtime.openvino_version', lambda: None)
    assert upscale.main(args) == 2 and 'OpenVINO is not installed' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        upscale.main(args + ['--bf16'])  # one precision at a time
    assert 'not allowed with argument' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists() or not any((tmp_path / 'out').iterdir())


def test_choice_of_runtime(tiny_model, monkeypatch):
    net = load_model(tiny_model)
    assert use_runtime(net, 'torch') == 'torch' == net.runtime.name == net.cs_attn.runtime.name
    with pytest.raises(ValueError, match='runtime must be one of'):
        use_runtime(net, 'onnx')
    with pytest.raises(ValueError, match=r"threads must be None \(PyTorch's count\) or a whole number >= 1, got 0"):
        use_runtime(net, 'auto', threads=0)
    monkeypatch.setattr('ciaosr_arch.runtime.cpu_kind', lambda flags=None: 'avx512-bf16')  # where auto takes OpenVINO
    monkeypatch.setattr('ciaosr_arch.runtime.openvino_version', lambda: '2026.4.1')
    net.to(torch.bfloat16)  # its graphs would be traced from float32 examples: PyTorch runs it
    assert use_runtime(net, 'auto') == 'torch' and isinstance(net.runtime, TorchRuntime)
    with pytest.raises(RuntimeError, match=r'OpenVINO runs float32 networks; the model is torch.bfloat16 \(for bf16'):
        use_runtime(net, 'openvino')
    net.float()
    monkeypatch.setattr('ciaosr_arch.runtime.openvino_version', lambda: None)
    assert use_runtime(net, 'auto') == 'torch' and isinstance(net.runtime, TorchRuntime)
    with pytest.raises(RuntimeError, match='OpenVINO is not installed'):
        use_runtime(net, 'openvino')


def test_every_net_is_built_with_pytorchs_runtime():
    """A net and its cross-scale attention come with a TorchRuntime, which is no module: the state_dict and the
    submodules are those of the official layout. Importing the package and the choice of runtime leaves OpenVINO
    unimported (it is optional: CI runs without it)."""
    import subprocess
    import sys

    from ciaosr_arch import LIIF, CiaoSR
    for net in (CiaoSR(encoder_opt={'num_feat': 8, 'num_block': 1}), LIIF(encoder_opt={'num_feat': 8, 'num_block': 1})):
        assert isinstance(net.runtime, TorchRuntime) and isinstance(net.runtime, DecodeRuntime)
        assert not any('runtime' in key for key in net.state_dict())
        assert not any('runtime' in name for name, _ in net.named_modules())
    assert isinstance(CiaoSR().cs_attn.runtime, TorchRuntime)
    code = 'import sys, ciaosr_arch, ciaosr_arch.runtime; print("openvino" in sys.modules)'
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=300)
    assert done.stdout.split() == ['False']


def test_engine_and_archs_run_on_the_attached_runtime(tiny_model):
    """Whatever runtime is attached (`attach`) gets every call of the engine and the archs, and PyTorch's gives
    the same result through it."""
    from ciaosr_arch.engine import memory_plan
    from ciaosr_arch.runtimes.base import attach

    calls = []

    class Recording(TorchRuntime):
        def __getattribute__(self, name):
            if name in ('attend', 'pair_rows', 'paste', 'chunk', 'query_bytes', 'decoding'):
                calls.append(name)
            return super().__getattribute__(name)

    net, lr = load_model(tiny_model), lr_image()
    with torch.no_grad():
        reference = super_resolve(net, lr, 4)
        attach(net, Recording())
        assert net.cs_attn.runtime is net.runtime and isinstance(net.runtime, DecodeRuntime)
        assert torch.equal(super_resolve(net, lr, 4), reference)
    assert {'attend', 'pair_rows', 'paste', 'chunk', 'decoding'} <= set(calls)
    calls.clear()
    memory_plan(net, 2 ** 30)
    assert {'chunk', 'query_bytes'} <= set(calls)


def test_cli_runtime_options(tiny_model, tmp_path, monkeypatch, capsys):
    """--runtime openvino where it is not available: one line, exit 2; --threads sets PyTorch's threads."""
    src = tmp_path / 'in.png'
    from PIL import Image
    Image.new('RGB', (6, 5), (200, 100, 50)).save(src)
    monkeypatch.setattr('ciaosr_arch.runtime.openvino_version', lambda: None)
    threads = torch.get_num_threads()
    try:
        code = upscale.main(['-i', str(src), '-o', str(tmp_path / 'out'), '-s', '2', '--model', str(tiny_model),
                             '--runtime', 'openvino', '--device', 'cpu'])
        assert code == 2 and 'OpenVINO is not installed' in capsys.readouterr().err
        code = upscale.main(['-i', str(src), '-o', str(tmp_path / 'out'), '-s', '2', '--model', str(tiny_model),
                             '--threads', '1'])
        assert code == 0 and cpu_path_line('torch', None) in capsys.readouterr().out  # with 1 thread
    finally:
        torch.set_num_threads(threads)


def test_attention_bands_equal_one_band(monkeypatch):
    """The cross-scale attention scored in bands of query rows (what `paste` gets) = all rows at once."""
    from ciaosr_arch.archs import cross_scale_attention
    torch.manual_seed(0)
    attention = cross_scale_attention.CrossScaleAttention(8)
    feat = torch.randn(2, 8, 19, 23, requires_grad=True)
    whole = attention(feat)
    (grad_whole,) = torch.autograd.grad(whole.square().sum(), feat)
    monkeypatch.setattr(cross_scale_attention, 'ATTENTION_BAND', 50)  # 2 rows of the 20 x 24 padded map per band
    banded = attention(feat)
    (grad_banded,) = torch.autograd.grad(banded.square().sum(), feat)
    assert (banded - whole).abs().max() <= 1e-6 and (grad_banded - grad_whole).abs().max() <= 1e-5


@needs_openvino
def test_runtime_decodes_in_long_calls(tiny_model, cache):
    """With the runtime attached the engine decodes CALL_QUERIES queries per call (it holds only a block's
    activations), within the memory plan; PyTorch's CPU decode, CACHE_QUERIES."""
    from ciaosr_arch.engine import memory_plan

    net = load_model(tiny_model)
    assert net.runtime.chunk('cpu') == CACHE_QUERIES < CALL_QUERIES
    use_runtime(net, 'openvino')
    assert net.runtime.chunk('cpu') == CALL_QUERIES and memory_plan(net, 2 ** 30)[1] == CALL_QUERIES


@needs_openvino
def test_conversion_never_contacts_the_network(tiny_model, cache, monkeypatch):
    """OpenVINO reports its import and each conversion to Google Analytics through any proxy; here a proxy that
    nothing may connect to stays untouched while a fresh process imports it and converts the graphs."""
    import select
    import socket
    import subprocess
    import sys

    trap = socket.socket()
    trap.bind(('127.0.0.1', 0))
    trap.listen()
    proxy = f'http://127.0.0.1:{trap.getsockname()[1]}'
    for name in ('HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy'):
        monkeypatch.setenv(name, proxy)
    for name in ('CI', 'TF_BUILD', 'JENKINS_URL', 'NO_PROXY', 'no_proxy'):  # telemetry stays off in CI jobs
        monkeypatch.delenv(name, raising=False)
    code = ('import torch; from ciaosr_arch import load_model, super_resolve; '
            'from ciaosr_arch.runtime import use_runtime; '
            f'net = load_model({str(tiny_model)!r}); use_runtime(net, "openvino"); '
            'super_resolve(net, torch.rand(1, 3, 9, 9), 4)')
    subprocess.run([sys.executable, '-c', code], check=True, timeout=300)
    try:
        assert select.select([trap], [], [], 2)[0] == [], 'converting the graphs tried to reach the network'
        subprocess.run([sys.executable, '-c', 'import openvino'], check=True, timeout=300)  # the control
        if select.select([trap], [], [], 10)[0] == []:
            pytest.skip('OpenVINO\'s telemetry is off on this machine (opted out): the trap cannot tell')
    finally:
        trap.close()


@needs_openvino
def test_openvino_attention_in_bands(tiny_model, cache, monkeypatch):
    """The fp32 attention's paste on OpenVINO, band by band with a shorter last band, = PyTorch."""
    from ciaosr_arch.archs import cross_scale_attention
    monkeypatch.setattr(cross_scale_attention, 'ATTENTION_BAND', 60)  # 14 x 18 padded map: bands of 3, 3, 3, 3, 2 rows
    _, reference, out = pytorch_then_openvino(tiny_model)
    assert (out - reference).abs().max() <= 1e-5


@needs_openvino
def test_non_finite_bank_is_decoded_in_pytorch(tiny_model, cache):
    """OpenVINO's ReLU maps NaN to 0; a bank with NaN goes to PyTorch, so the NaN reaches the output (and the CLI
    refuses to write it) instead of becoming plausible pixels."""
    from ciaosr_arch import make_cell, make_coord

    net = load_model(tiny_model)
    use_runtime(net, 'openvino')
    coord = make_coord((52, 68))[None]
    cell = make_cell((52, 68), coord.shape[1])
    with torch.no_grad():
        bank = net.encode(lr_image(), (52, 68))
        assert torch.isfinite(net.decode(bank, coord, cell)).all()
        broken = dict(bank, values=bank['values'].clone())
        broken['values'][0, 5, 0] = float('nan')
        assert torch.isnan(net.decode(broken, coord, cell)).any()
        assert torch.isfinite(net.decode(bank, coord, cell)).all()


@needs_openvino
def test_damaged_or_unwritable_cache(tiny_model, cache, tmp_path, monkeypatch):
    """A cached graph that cannot be read is converted again and replaced (a warning); a cache that cannot be
    written (not a folder, a full disk) costs a conversion per process (a warning), leaves no partial files, and
    the result is the same."""
    net, reference, first = pytorch_then_openvino(tiny_model)
    lr = lr_image()
    with torch.no_grad():
        graph = sorted(cache.glob('attend-pair-*.xml'))[0]
        graph.write_text('<net>cut short')
        use_runtime(net, 'openvino')
        # the reason, not the first line of OpenVINO's message ('Exception from src/inference/src/cpp/core.cpp:84:')
        with pytest.warns(UserWarning, match='cannot read the cached OpenVINO graph .*: Unable to read the model'):
            assert torch.equal(super_resolve(net, lr, 4), first)
        assert graph.read_text().startswith('<?xml')  # replaced
        graph.with_suffix('.bin').unlink()  # a graph without its weights
        use_runtime(net, 'openvino')
        with pytest.warns(UserWarning, match='cannot read the cached .*: Empty weights data in bin file'):
            assert torch.equal(super_resolve(net, lr, 4), first)

        blocked = tmp_path / 'not-a-folder'
        blocked.write_text('a file where the cache folder would be')
        monkeypatch.setenv('CIAOSR_CACHE_DIR', str(blocked))
        reports = []
        use_runtime(net, 'openvino', report=reports.append)
        with pytest.warns(UserWarning, match='cannot cache the OpenVINO graph'):
            out = super_resolve(net, lr, 4)
    assert (out - reference).abs().max() <= 1e-5 and blocked.read_text().startswith('a file')
    assert reports and all(f'again next run: {blocked / "openvino"} cannot be written' in r for r in reports)

    def disk_full(model, graph, weights):  # writes part of the graph, then the disk is full
        Path(graph).write_text('<?xml')
        raise OSError(28, 'No space left on device')
    monkeypatch.setenv('CIAOSR_CACHE_DIR', str(tmp_path / 'full'))
    monkeypatch.setattr(import_openvino(), 'serialize', disk_full)
    use_runtime(net, 'openvino')
    with torch.no_grad(), pytest.warns(UserWarning, match='No space left on device'):
        assert torch.equal(super_resolve(net, lr, 4), out)
    assert list((tmp_path / 'full' / 'openvino').iterdir()) == []  # no partial file left


@pytest.mark.parametrize('flags, kind', [
    ({'avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16'}, 'avx512-bf16'),
    ({'avx2', 'avx512f', 'avx512_vnni'}, 'avx512-vnni'), ({'avx2', 'avx512f', 'avx512_bf16'}, 'avx512'),
    ({'avx2', 'avx512f'}, 'avx512'), ({'avx2', 'avx_vnni'}, 'avx2-vnni'), ({'avx2'}, 'avx2'), (set(), 'older')])
def test_cpu_kind_from_flags(flags, kind):
    assert cpu_kind(frozenset(flags)) == kind


def test_isa_limit_narrows_the_flags(monkeypatch):
    """ONEDNN_MAX_CPU_ISA (what oneDNN honours) limits the flags as oneDNN does: AVX-512 limits drop AVX-VNNI."""
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX2')
    assert cpu_flags() <= {'avx2'}
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX512_CORE')
    assert 'avx_vnni' not in cpu_flags() and 'avx512_vnni' not in cpu_flags()
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'avx2_vnni')  # oneDNN takes either case
    assert cpu_flags() <= {'avx2', 'avx_vnni'}


@needs_openvino
@pytest.mark.parametrize('kind', sorted(CPU_PLANS))
def test_automatic_choice_per_cpu_kind(tiny_model, tmp_path, monkeypatch, capsys, kind):
    """--runtime auto takes the exact path that is fastest on each CPU kind and names it in its CPU line; --int8 is
    refused (one line, exit 2) where it is slower than the default, and runs on OpenVINO elsewhere."""
    monkeypatch.setattr('ciaosr_arch.runtime.cpu_kind', lambda flags=None: kind)
    net = load_model(tiny_model)
    assert use_runtime(net, 'auto') == CPU_PLANS[kind]['exact']
    src = tmp_path / 'in.png'
    from PIL import Image
    Image.new('RGB', (6, 5), (200, 100, 50)).save(src)
    args = ['-i', str(src), '-o', str(tmp_path / 'out'), '-s', '2', '--model', str(tiny_model), '--device', 'cpu']
    assert upscale.main(args) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith('CPU: '))
    assert CPU_KINDS[kind] in line and line.endswith(f'decode on {CPU_PLANS[kind]["exact"]} in fp32')
    if CPU_PLANS[kind]['int8']:
        assert use_runtime(net, 'auto', int8=True) == 'openvino'
    else:
        assert upscale.main(args + ['--int8']) == 2
        assert '--int8: this CPU' in capsys.readouterr().err


def test_emulated_avx2_limits_pytorch_and_openvino():
    """Under `python -m ciaosr_arch.emulation avx2 COMMAND` this package sees an AVX2 CPU, PyTorch dispatches AVX2
    kernels and finds no native bf16, and OpenVINO offers no bf16: what `.ci/run` and `ciaosr-benchmark-speed --isa
    avx2` rely on (on a CPU with AVX2 at least). The wrapper's line says whether CPUID is masked."""
    import subprocess
    import sys
    if 'avx2' not in cpu_flags():
        pytest.skip('this CPU has no AVX2')
    code = ('from ciaosr_arch.runtime import cpu_kind, openvino_version\n'
            'from ciaosr_arch.emulation import emulated_kind\n'
            'from ciaosr_arch.runtimes.openvino import import_openvino\n'
            'import torch\n'
            'caps = import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") '
            'if openvino_version() else []\n'
            'print(cpu_kind(), emulated_kind(), torch.backends.cpu.get_cpu_capability(), '
            'torch.ops.mkldnn._is_mkldnn_bf16_supported(), "BF16" in caps)')
    done = subprocess.run([sys.executable, '-m', 'ciaosr_arch.emulation', 'avx2', sys.executable, '-c', code],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ['avx2', 'avx2', 'AVX2', 'False', 'False']
    problem = emulation_env('avx2')[1]
    assert done.stderr.startswith(f'emulating CPU kind avx2: {problem or "libraries limited, CPUID masked"}\n')
    from ciaosr_arch.emulation import main
    assert main(['avx3', 'true']) == 2 and main(['avx2']) == 2
    assert main(['avx2', '/nonexistent/command']) == 127


def test_cpuid_mask_hides_avx512_and_keeps_real_crashes():
    """With CPUID masked (`ciaosr_arch.emulation`: Linux with CPUID faulting, a C compiler), code that reads CPUID
    itself (NumPy's and PyTorch's CPU detection) sees no AVX-512, which the libraries' limits alone leave it, also
    with Python's faulthandler on and with SIGSEGV blocked; a real segmentation fault still ends the process with
    SIGSEGV, after faulthandler's report where it is on, and so does a stack overflow (unreported: the mask's handler
    takes no alternate stack)."""
    import signal
    import subprocess
    import sys
    env, problem = emulation_env('avx2')
    if problem:
        pytest.skip(problem)
    if 'avx512f' not in cpu_flags(emulated=False):
        pytest.skip('this CPU has no AVX-512 to hide')
    env = {name: value for name, value in env.items() if name != 'PYTHONFAULTHANDLER'}
    code = ('import os, signal\n'
            'signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGSEGV})\n'  # a fault while blocked would end it
            'import numpy, torch\n'
            'from numpy._core._multiarray_umath import __cpu_features__ as found\n'
            'print(os.environ.get("CIAOSR_CPUID_MASKED"), found["AVX512F"], found["AVX2"], '
            'torch.cpu._is_avx512_supported(), torch.cpu._is_avx2_supported())')
    limits_only = {name: value for name, value in env.items() if name not in ('LD_PRELOAD', 'CIAOSR_CPUID_HIDE')}
    done = subprocess.run([sys.executable, '-c', code], env=limits_only, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ['None', 'True', 'True', 'True', 'True']
    crashes = ['import faulthandler; faulthandler._stack_overflow()', 'import ctypes; ctypes.string_at(0)']
    for options in ([], ['-X', 'faulthandler']):
        done = subprocess.run([sys.executable, *options, '-c', code], env=env, capture_output=True, text=True)
        assert done.stdout.split() == ['1', 'False', 'True', 'False', 'True'], done.stderr
        for crash in crashes:
            ended = subprocess.run([sys.executable, *options, '-c', crash], env=env, capture_output=True, text=True)
            assert ended.returncode == -signal.SIGSEGV, (crash, ended.stderr)
        assert ('Fatal Python error: Segmentation fault' in ended.stderr) == bool(options), ended.stderr
