"""The picture pipeline (ciaosr/pipeline.py): a file to a file with a progress function, the one scale check of
the CLI, the app and the library, output sizes, and one header read from input to written file."""
import re

import numpy as np
import pytest
import torch
from PIL import Image

from ciaosr import app, image_io, pipeline
from ciaosr import upscale as cli
from ciaosr.cli import UsageError
from ciaosr_arch import load_model
from ciaosr_arch.runtimes.base import TorchRuntime


def gradient(path, alpha=False):
    """A 24x20 RGB (or RGBA) gradient saved at `path`."""
    rows, cols = np.mgrid[0:20, 0:24]
    layers = [rows * 12, cols * 10, (rows + cols) * 5] + ([np.full((20, 24), 200)] if alpha else [])
    Image.fromarray(np.stack(layers, -1).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def probes(monkeypatch):
    """The paths that image_io.probe_image reads headers of, in order."""
    read, probe = [], image_io.probe_image

    def counted(path):
        read.append(path)
        return probe(path)
    monkeypatch.setattr(image_io, 'probe_image', counted)
    return read


def test_a_file_to_a_file_with_progress_equals_the_cli(tmp_path, tiny_model, probes, capsys):
    """upscale_file reads the header once, reports (done, total) as the output is decoded, and writes the file that
    ciaosr-upscale writes for the same settings."""
    src = gradient(tmp_path / 'gradient.png')
    upscaler = pipeline.Upscaler(load_model(tiny_model), torch.device('cpu'))
    calls = []
    done = upscaler.upscale_file(src, tmp_path / 'lib' / 'gradient_out.png', pipeline.Target(scale=2.5),
                                 progress=lambda *call: calls.append(call))
    assert probes == [src]
    assert done.dst == tmp_path / 'lib' / 'gradient_out.png' and done.note is None
    assert (done.in_size, done.size) == ((20, 24), (50, 60)) and Image.open(done.dst).size == (60, 50)
    assert calls and calls[-1] == (60 * 50, 60 * 50) and all(total == 60 * 50 for _, total in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    probes.clear()
    assert cli.main(['-i', str(src), '-o', str(tmp_path / 'cli'), '-s', '2.5', '--model', str(tiny_model),
                     '--runtime', 'torch']) == 0
    assert probes == [src]  # planned from the header; the upscale uses that header
    assert (tmp_path / 'cli' / 'gradient_out.png').read_bytes() == done.dst.read_bytes()


def test_a_format_that_cannot_hold_the_picture_gives_png_never_over_the_input(tmp_path, tiny_model):
    src = gradient(tmp_path / 'clear.png', alpha=True)
    upscaler = pipeline.Upscaler(load_model(tiny_model), torch.device('cpu'))
    done = upscaler.upscale_file(src, tmp_path / 'out' / 'clear.jpg', pipeline.Target(width=48))
    assert done.dst == tmp_path / 'out' / 'clear.png' and done.note == 'it has alpha: written as PNG, not JPEG'
    assert image_io.read_image(done.dst).pixels.shape == (40, 48, 4) and not (tmp_path / 'out' / 'clear.jpg').exists()
    with pytest.raises(ValueError, match=r'^its output .*clear\.png is the input file; refusing to overwrite it$'):
        upscaler.upscale_file(src, tmp_path / 'clear.jpg', pipeline.Target(scale=2))  # PNG: the input's own name
    assert Image.open(src).size == (24, 20)
    with pytest.raises(ValueError, match=r'^is 24x20, wider and taller than the requested 12x10; CiaoSR only upscales'):
        upscaler.upscale_file(src, tmp_path / 'small.png', pipeline.Target(width=12))
    with pytest.raises(ValueError, match=r'^is 24x20, taller than the requested 25x10; CiaoSR only upscales'):
        upscaler.upscale_file(src, tmp_path / 'small.png', pipeline.Target(width=25, height=10))


def test_the_app_reads_each_header_once(tmp_path, tiny_model, probes):
    src = gradient(tmp_path / 'gradient.png')
    session = app.AppSession(tmp_path / 'out', torch.device('cpu'), [str(tiny_model)])
    outcome = session.run([src], app.Options('long side', 48, str(tiny_model.resolve()), 'fp32', '2.5GB'))
    assert outcome.lines[-1].startswith('1 done') and probes == [src]


@pytest.mark.parametrize('scale', [1, 0.5, float('nan'), float('inf'), '2'])
def test_the_library_refuses_scales_that_do_not_upscale(scale):
    with pytest.raises(ValueError, match=f'^the scale must be a finite number > 1, got {scale}$'):
        pipeline.Target(scale=scale)


def test_the_cli_and_the_app_share_the_scale_check(tmp_path, monkeypatch, capsys):
    """Both refuse x1 with the pipeline's message, and both ask pipeline.check_scale (replaced here by a stand-in
    that refuses everything: both then say its words)."""
    session = app.AppSession(tmp_path / 'out', torch.device('cpu'))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['-i', str(tmp_path), '-o', str(tmp_path / 'out'), '-s', '1'])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ('error: argument -s/--scale: the scale must be a finite number > 1, got 1.0 '
                                       '(see --help)\n')
    with pytest.raises(UsageError, match=r'^the scale must be a finite number > 1, got 1\.0$'):
        session.run([], app.Options('scale', 1, 'default', 'fp32', '2.5GB'))

    def refuse(scale, name='the scale'):
        raise ValueError(f'{name}: refused by the stand-in')
    monkeypatch.setattr(pipeline, 'check_scale', refuse)
    with pytest.raises(SystemExit):
        cli.main(['-i', str(tmp_path), '-o', str(tmp_path / 'out'), '-s', '3'])
    assert capsys.readouterr().err == 'error: argument -s/--scale: the scale: refused by the stand-in (see --help)\n'
    with pytest.raises(UsageError, match='^the scale: refused by the stand-in$'):
        session.run([], app.Options('scale', 3, 'default', 'fp32', '2.5GB'))


def test_target_sizes():
    assert pipeline.Target(scale=2.5).size((20, 24)) == (50, 60)
    assert pipeline.Target(width=48).size((20, 24)) == (40, 48)
    assert pipeline.Target(height=30).size((20, 24)) == (30, 36)
    assert pipeline.Target(width=30, height=70).size((20, 24)) == (70, 30)
    assert pipeline.Target(long_side=48).size((20, 24)) == (40, 48)
    assert pipeline.Target(long_side=48).size((24, 20)) == (48, 40)
    for wrong, message in (({}, 'got none'), ({'scale': 2, 'width': 3}, 'got a scale and a width/height'),
                           ({'width': 0}, 'the width must be a whole number of pixels >= 1, got 0'),
                           ({'long_side': 2.5}, 'the long side must be a whole number')):
        with pytest.raises(ValueError, match=message):
            pipeline.Target(**wrong)


def test_the_default_budget_follows_the_machine(tiny_model, monkeypatch):
    """A 12 MP phone photo at x2 (8000x6000) needs ~2.83 GiB with the model resident; the fixed 2.5 GiB default
    refused it, 40 % of an 8 GB laptop plans it; 2.5 GiB stays the least default."""
    monkeypatch.setattr(pipeline, 'resident_bytes', lambda device: int(0.84 * 2 ** 30))
    cpu, info = torch.device('cpu'), image_io.ImageInfo(4000, 3000, 3, 1, 0)
    for memory, budget in ((8 * 2 ** 30, int(0.4 * 8 * 2 ** 30)), (4 * 2 ** 30, pipeline.CPU_BUDGET),
                           (0, pipeline.CPU_BUDGET)):
        monkeypatch.setattr(pipeline, 'device_memory', lambda device, memory=memory: memory)
        assert pipeline.default_budget(cpu) == budget
    monkeypatch.setattr(pipeline, 'device_memory', lambda device: 8 * 2 ** 30)
    assert pipeline.Upscaler(load_model(tiny_model), cpu).plan(info, (6000, 8000))[-1].size == (6000, 8000)
    with pytest.raises(MemoryError, match='it needs at least 2.8'):
        pipeline.Upscaler(load_model(tiny_model), cpu, budget=pipeline.CPU_BUDGET).plan(info, (6000, 8000))


def test_an_output_that_does_not_fit_says_the_budget_it_needs(tiny_model, monkeypatch):
    """A trial's 2048x1536 photo at x4: 'does not fit in --max-memory 2.7 GiB (the model, input and output alone need
    2.21 GiB)', which read as wrong; the message now names the least budget, and that budget plans."""
    monkeypatch.setattr(pipeline, 'resident_bytes', lambda device: 2 ** 30)
    net, info = load_model(tiny_model), image_io.ImageInfo(2048, 1536, 3, 1, 0)
    with pytest.raises(MemoryError) as refused:
        pipeline.Upscaler(net, torch.device('cpu'), budget=2 * 2 ** 30).plan(info, (6144, 8192))
    message = str(refused.value)
    needed = float(re.search(r': it needs at least ([\d.]+) GiB \(the model, input and output take ', message)[1])
    assert pipeline.Upscaler(net, torch.device('cpu'), budget=round(needed * 2 ** 30)).plan(info, (6144, 8192))
    with pytest.raises(MemoryError):  # (the amount is shown to 0.01 GiB, rounded up)
        pipeline.Upscaler(net, torch.device('cpu'), budget=round((needed - 0.01) * 2 ** 30)).plan(info, (6144, 8192))


def test_messages_name_the_settings_as_the_caller_knows_them(tiny_model, monkeypatch):
    """The tile and overlap messages named the CLI's --tile, --tile-overlap and --max-memory to every caller; a Python
    caller now reads the arguments, the CLI its options (CLI_NAMES)."""
    monkeypatch.setattr(pipeline, 'resident_bytes', lambda device: 0)
    net, info, cpu = load_model(tiny_model), image_io.ImageInfo(200, 200, 3, 1, 0), torch.device('cpu')

    def auto_tile(budget):
        try:
            return pipeline.Upscaler(net, cpu, budget=budget).plan(info, (400, 400))[0].tile
        except MemoryError:
            return 0
    low, high = 2 ** 20, 2 ** 34  # the least budget whose automatic tile is not under the smallest automatic one
    while high - low > 2 ** 10:
        middle = (low + high) // 2
        low, high = (low, middle) if auto_tile(middle) else (middle, high)
    assert pipeline.MIN_TILE <= auto_tile(high) < 64
    with pytest.raises(MemoryError, match=r'^the tile 64 does not fit in the budget [\d.]+ MiB for this image: the '
                                          r'largest tile that fits is \d+; lower the tile or raise the budget$'):
        pipeline.Upscaler(net, cpu, budget=high, tile=64).plan(info, (400, 400))
    with pytest.raises(MemoryError, match=r'^--tile 64 does not fit in --max-memory [\d.]+ MiB for this image: '):
        pipeline.Upscaler(net, cpu, budget=high, tile=64, names=pipeline.CLI_NAMES).plan(info, (400, 400))
    with pytest.raises(ValueError, match=r'^the tile overlap 40 needs LR tiles of at least 80 pixels, but the '
                                         r'automatic tile is \d+ here \(the largest that the budget [\d.]+ MiB allows, '
                                         r'at most 64 on CPU\); lower the tile overlap, or give the tile$'):
        pipeline.Upscaler(net, cpu, budget=high, tile_overlap=40).plan(info, (400, 400))


def test_a_given_tile_and_pictures_smaller_or_narrower_than_it(tmp_path, tiny_model, monkeypatch):
    """A review: a tile larger than a picture under 8 px ran as a tile of the picture's side, which super_resolve
    refuses (every such file failed with --tile); a 2000 x 64 strip in one 2000-px tile was planned as 2000^2 LR
    pixels and refused where its 2000 x 64 fit; a given tile's overlap message spoke of the automatic tile."""
    monkeypatch.setattr(pipeline, 'resident_bytes', lambda device: 0)
    net, cpu = load_model(tiny_model), torch.device('cpu')
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(tmp_path / 'small.png')
    done = pipeline.Upscaler(net, cpu, tile=16).upscale_file(tmp_path / 'small.png', tmp_path / 'out.png',
                                                            pipeline.Target(scale=4))
    assert done.steps[0].whole and Image.open(tmp_path / 'out.png').size == (28, 20)

    strip = image_io.ImageInfo(2000, 64, 3, 1, 0)
    whole = pipeline.Upscaler(net, cpu, budget=4 * 2 ** 30).plan(strip, (128, 4000))  # as one tile: its area fits
    assert [(step.tile, step.whole) for step in
            pipeline.Upscaler(net, cpu, budget=4 * 2 ** 30, tile=2000).plan(strip, (128, 4000))] == [(2000, True)]
    assert not whole[0].whole  # (the automatic tile is capped for speed on CPU)
    with pytest.raises(ValueError, match=r'^the tile overlap 10 needs LR tiles of at least 20 pixels, but the tile is '
                                         r'16; lower the tile overlap or raise the tile$'):
        pipeline.Upscaler(net, cpu, tile=16, tile_overlap=10).plan(image_io.ImageInfo(100, 100, 3, 1, 0), (200, 200))


def test_a_plan_that_does_not_fit_frees_the_runtimes_compiled_models_first(tiny_model, monkeypatch):
    """A long-running web app piled up OpenVINO's compiled models (one per shape, ~0.1 GB each) until the plans, which
    count the memory in use, refused every photo at the default budget; the plan now has the runtime drop them and
    measures again before it refuses."""
    in_use = {'bytes': 2 * 2 ** 30}  # the memory in use, as resident_bytes reads it: 2 GiB of a 2.5 GiB budget
    monkeypatch.setattr(pipeline, 'resident_bytes', lambda device: in_use['bytes'])

    class Holding(TorchRuntime):  # a runtime that holds compiled models worth 1.2 GiB, once
        def release(self):
            held, in_use['bytes'] = in_use['bytes'] > 2 ** 30, 0.8 * 2 ** 30
            return held

    net = load_model(tiny_model)
    net.runtime = Holding()
    upscaler = pipeline.Upscaler(net, torch.device('cpu'), budget=5 * 2 ** 29)
    info = image_io.ImageInfo(64, 64, 3, 1, 0)
    assert upscaler.base == 2 * 2 ** 30
    steps = upscaler.plan(info, (1024, 1024))  # 16 MB of output pixels and the work room: over 0.25 GiB
    assert steps[-1].size == (1024, 1024) and upscaler.base == 0.8 * 2 ** 30
    with pytest.raises(MemoryError, match='does not fit in the budget 2.5 GiB: .*; raise the budget or lower the '
                                          'scale$'):
        upscaler.plan(info, (16384, 16384))  # nothing left to free (named as the Python argument, not --max-memory)
    for wrong, message in (({'steps': 2.5}, 'steps must be a whole number, got 2.5'),  # a review: raw errors late
                           ({'tile': 16.0}, 'tile must be a whole number, got 16.0'),
                           ({'tile_overlap': '4'}, "tile_overlap must be a whole number or None, got '4'")):
        with pytest.raises(TypeError, match=f'^{re.escape(message)}$'):
            pipeline.Upscaler(net, torch.device('cpu'), **wrong)
    with pytest.raises(TypeError, match=r"^budget must be a whole number of bytes \(e.g. 4 \* 2 \*\* 30\) or None, "
                                        r"got '4GB'"):
        pipeline.Upscaler(net, torch.device('cpu'), budget='4GB')
