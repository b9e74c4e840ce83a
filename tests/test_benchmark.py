"""Full-reference benchmark: protocol (LR making, crops, shave, gray images), the CLI's outputs, the Bicubic row
reproducing the published bicubic PSNRs, LPIPS of the lpips package, and the real-world mode (seeded Real-ESRGAN
degradations)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr
from PIL import Image

from ciaosr import benchmark
from ciaosr.iqa import LPIPS_FILE, MetricUnavailable, create_lpips
from ciaosr.quality_report import load_rgb
from ciaosr_arch.evaluation import benchmark_pair, bicubic_upsample, lr_size, psnr_ssim, shave, to_rgb
from ciaosr_arch.image import to_pixels, to_tensor

# Bicubic (Y, shave = scale) as published in the EDSR/RCAN/LIIF tables: (PSNR, SSIM) for x2, x3, x4.
PUBLISHED_BICUBIC = {
    'Set5': [(33.66, 0.9299), (30.39, 0.8682), (28.42, 0.8104)],
    'Set14': [(30.24, 0.8688), (27.55, 0.7742), (26.00, 0.7027)],
    'B100': [(29.56, 0.8431), (27.21, 0.7385), (25.96, 0.6675)],
}


def random_image(h, w, channels=3, seed=0):
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize('scale, hr_size, expected_lr, expected_hr', [
    (4, (37, 50), (9, 12), (36, 48)),  # integer: the usual mod-crop
    (2.5, (37, 50), (14, 20), (35, 50)),
    (3.3, (37, 50), (11, 15), (36, 50)),  # round(15 * 3.3) = round(49.5) = 50 (Python rounding, as LIIF)
    (2.2, (33, 33), (15, 15), (33, 33)),  # 33 / 2.2 = 14.999999999999998: the 1e-9 keeps 15
])
def test_benchmark_pair_crops_like_liif(scale, hr_size, expected_lr, expected_hr):
    img = random_image(*hr_size)
    assert lr_size(hr_size, scale) == expected_lr
    lr, hr = benchmark_pair(img, scale)
    assert lr.shape == (1, 3, *expected_lr) and lr.dtype == torch.float32
    assert hr.shape == (*expected_hr, 3) and hr.dtype == np.uint8
    np.testing.assert_array_equal(hr, img[:expected_hr[0], :expected_hr[1]])  # top-left crop
    levels = lr.numpy() * 255
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)  # LR rounded to 8 bits, as the LR files


def test_downsamplers_differ_and_unknown_one_fails():
    img = random_image(40, 40)
    matlab, _ = benchmark_pair(img, 4)
    pil, _ = benchmark_pair(img, 4, downsample='pil')
    assert matlab.shape == pil.shape and not torch.equal(matlab, pil)
    with pytest.raises(ValueError, match='downsample'):
        benchmark_pair(img, 4, downsample='nearest')
    with pytest.raises(ValueError, match='too small'):
        benchmark_pair(random_image(3, 40), 4)


def test_gray_images_are_scored_on_their_intensity():
    gray = random_image(48, 48, channels=1)
    lr, hr = benchmark_pair(gray, 2)
    assert hr.ndim == 2 and torch.equal(lr[:, 0], lr[:, 1]) and torch.equal(lr[:, 0], lr[:, 2])
    sr = to_pixels(bicubic_upsample(lr, hr.shape)[0])
    psnr, ssim = psnr_ssim(sr, hr, 2)
    assert psnr == pytest.approx(calculate_psnr(sr[..., 0], hr, 2))
    # The Y channel of the gray image copied to RGB would scale the error by 219/255 (+1.32 dB).
    psnr_y, _ = psnr_ssim(sr, to_rgb(hr), 2)
    assert psnr_y - psnr == pytest.approx(20 * math.log10(255 / 219), abs=1e-6)
    assert 0 < ssim < 1


def test_shave_rules():
    assert [shave(2), shave(3), shave(2.5), shave(12)] == [2, 3, 3, 12]
    assert [shave(4, rgb_shave6=True), shave(2.5, rgb_shave6=True)] == [10, 9]
    hr = random_image(60, 60)
    sr = hr.copy()
    sr[:10] = 255 - sr[:10]  # errors only in the 10-pixel top band: shaved by the DIV2K protocol at x4
    assert psnr_ssim(sr, hr, 4, rgb_shave6=True) == (float('inf'), pytest.approx(1))
    assert math.isfinite(psnr_ssim(sr, hr, 4)[0])
    with pytest.raises(ValueError, match='differs'):
        psnr_ssim(sr[:-1], hr, 4)


def test_lpips_score_uses_the_shaved_rgb_crop():
    sr, gray = random_image(20, 20, seed=1), random_image(20, 20, channels=1, seed=2)
    def mean_abs_difference(a, b):
        return (a - b).abs().mean()
    expected = np.abs(sr[3:-3, 3:-3] / 255 - to_rgb(gray)[3:-3, 3:-3] / 255).mean()
    assert benchmark.lpips_score(mean_abs_difference, sr, gray, 3) == pytest.approx(expected, rel=1e-5)


def set14_crops(shared_data, root, boxes):
    """A data root whose 'Set14' holds crops (PIL boxes) of baboon.png (colour) and bridge.png (single-channel)."""
    folder = root / 'Set14'
    folder.mkdir(parents=True)
    for name, box in zip(('baboon.png', 'bridge.png'), boxes):
        Image.open(shared_data / 'Set14' / name).crop(box).save(folder / name)
    return root


@pytest.fixture
def small_data_root(shared_data, tmp_path):
    """A 'Set14' of two small crops: a colour one and the single-channel bridge.png."""
    return set14_crops(shared_data, tmp_path / 'data', [(100, 100, 172, 164), (200, 200, 266, 262)])


def test_benchmark_outputs_with_a_tiny_model(small_data_root, tmp_path, tiny_model):
    out = {name: tmp_path / 'reports' / name for name in ('out.json', 'out.md', 'out.png')}  # its folder made
    records = benchmark.run([
        '--model', 'bicubic', '--model', str(tiny_model), '--name', 'Tiny',
        '--data-root', str(small_data_root), '--datasets', 'Set14', '--scales', '6', '2', '2.5',
        '--tile', '24', '--tile-overlap', '8', '--lpips', '--iqa-weights', str(tmp_path),
        '--json', str(out['out.json']), '--markdown', str(out['out.md']), '--plot', str(out['out.png'])])

    assert json.loads(out['out.json'].read_text()) == records
    assert [(r['method'], r['scale']) for r in records] == [(m, s) for m in ('bicubic', 'Tiny') for s in (2, 2.5, 6)]
    for record in records:
        assert record['dataset'] == 'Set14' and record['n_images'] == 2
        assert 0 < record['psnr'] < 60 and 0 < record['ssim'] <= 1
        assert record['lpips'] is None and record['lpips_unavailable']  # no weights in --iqa-weights: a reason
    # Each record is the mean over the images of the protocol's scores.
    images = [benchmark.load_hr(small_data_root / 'Set14' / name) for name in ('baboon.png', 'bridge.png')]
    assert images[1].ndim == 2
    for scale, record in zip((2, 2.5, 6), records):
        scores = []
        for img in images:
            lr, hr = benchmark_pair(img, scale)
            scores.append(psnr_ssim(to_pixels(bicubic_upsample(lr, hr.shape[:2])[0]), hr, scale))
        assert (record['psnr'], record['ssim']) == pytest.approx(tuple(np.mean(scores, axis=0)))

    report = out['out.md'].read_text()
    assert '| Method | Set14 x2 | Set14 x2.5 | Set14 x6* |' in report
    assert '\n| bicubic | ' in report and '\n| Tiny | ' in report and 'LPIPS unavailable' in report
    assert Image.open(out['out.png']).format == 'PNG'


def test_report_paths_are_checked_before_any_work(small_data_root, tmp_path, monkeypatch):
    """A report that cannot be written was a traceback after the whole run (its folder missing): now folders are
    made, and a path that cannot hold the file is one line before anything is scored."""
    monkeypatch.setattr(benchmark, 'evaluate', lambda *args: pytest.fail('scored before the paths were checked'))
    (tmp_path / 'taken').mkdir()
    (tmp_path / 'file').write_text('')
    argv = ['--model', 'bicubic', '--data-root', str(small_data_root), '--datasets', 'Set14']
    with pytest.raises(SystemExit, match=r'taken is a folder; give a file name for the report$'):
        benchmark.run(argv + ['--json', str(tmp_path / 'taken')])
    with pytest.raises(SystemExit, match=r'file exists and is not a folder$'):
        benchmark.run(argv + ['--markdown', str(tmp_path / 'file' / 'table.md')])


def test_default_model_without_shipped_weights_fails_clearly(small_data_root, tmp_path, monkeypatch):
    monkeypatch.setattr('ciaosr_arch.shipped.WEIGHTS_DIR', tmp_path)  # no shipped file there
    with pytest.raises(SystemExit, match='default weights are missing'):
        benchmark.run(['--model', 'default', '--data-root', str(small_data_root), '--datasets', 'Set14'])


def test_bicubic_row_reproduces_published_psnr(shared_data, tmp_path):
    records = benchmark.run(['--model', 'bicubic', '--data-root', str(shared_data), '--datasets', *PUBLISHED_BICUBIC,
                              '--scales', '2', '3', '4', '--json', str(tmp_path / 'bicubic.json')])
    measured = {(r['dataset'], r['scale']): (r['psnr'], r['ssim']) for r in records}
    for dataset, published in PUBLISHED_BICUBIC.items():
        for scale, (psnr, ssim) in zip((2, 3, 4), published):
            got_psnr, got_ssim = measured[dataset, scale]
            assert got_psnr == pytest.approx(psnr, abs=0.03), f'{dataset} x{scale}: PSNR {got_psnr:.3f} != {psnr}'
            assert got_ssim == pytest.approx(ssim, abs=0.002), f'{dataset} x{scale}: SSIM {got_ssim:.4f} != {ssim}'


def test_speed_benchmark_rows_and_accuracy(tmp_path, capfd, monkeypatch):
    """ciaosr-benchmark-speed on a tiny input: one row per path, the exact paths equal the official-style (a), the
    bf16 ones are compared with (b) in PSNR; ratios to (a) only where (a) ran; its temporary files are removed;
    --isa avx2 runs it again on an emulated AVX2 CPU and says so, and whether CPUID is masked."""
    import tempfile

    from ciaosr import benchmark_speed
    from ciaosr_arch.emulation import emulation_env
    from ciaosr_arch.runtime import openvino_version

    out, temporary = tmp_path / 'speed.json', tmp_path / 'temporary'
    temporary.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(temporary))
    monkeypatch.setenv('TMPDIR', str(temporary))  # and for the child processes
    benchmark_speed.main(['--sizes', '12', '--scales', '2', '--repeat', '1', '--no-memory', '--threads', '1',
                          '--json', str(out)])
    assert not list(temporary.iterdir())
    rows = json.loads(out.read_text())
    expected = ['a', 'b', 'c'] + (['d', 'e', 'f'] if openvino_version() else [])
    assert [row['path'][1] for row in rows] == expected
    by_path = {row['path'][1]: row for row in rows}
    assert float(by_path['b']['accuracy'].rsplit(' ', 1)[1]) <= 1e-5
    assert by_path['c']['accuracy'].startswith('PSNR vs (b)') and by_path['a']['speedup'] == 1
    if openvino_version():
        assert float(by_path['d']['accuracy'].rsplit(' ', 1)[1]) <= 1e-5 and by_path['d']['one_time_seconds'] > 0
        assert by_path['f']['accuracy'].startswith('PSNR vs (b)') and by_path['f']['one_time_seconds'] > 0
    capfd.readouterr()
    benchmark_speed.main(['--sizes', '12', '--scales', '2', '--repeat', '1', '--no-memory', '--threads', '1',
                          '--paths', 'bc', '--json', str(out), '--isa', 'avx2'])
    rows = json.loads(out.read_text())
    assert [row['path'][1] for row in rows] == ['b', 'c'] and rows[0]['speedup'] is None
    printed = capfd.readouterr().out
    assert 'PSNR vs (b)' in rows[1]['accuracy'] and '| - |' in printed
    masked = 'not masked' if emulation_env('avx2')[1] else 'masked'
    assert printed.startswith(f'CPU: AVX2 only (Zen 1-3, Core before Ice Lake) (emulated, CPUID {masked}); '
                              'flags: avx2;')
    with pytest.raises(SystemExit):
        benchmark_speed.main(['--paths', 'bx'])
    assert "--paths takes letters of abcdefr, got 'bx'" in capfd.readouterr().err


def test_speed_benchmark_pipeline_mode(tmp_path, tiny_model, capfd, monkeypatch):
    """--pipeline on the CPU: Real-ESRGAN (a tiny RRDBNet, loaded by spandrel), then the CLI's Upscaler for each model,
    at each scale on a centre crop of --photo, a row each in that order, printed and saved as measured; Real-ESRGAN's
    x2 named as its x4 output resized, each row's time against Real-ESRGAN's row of its input and scale; no GPU memory
    off CUDA. A row that fails says why and the others go on. A crop larger than the photo, CUDA without a GPU,
    --repeat 0, and options of the other mode fail with one line."""
    from basicsr.archs.rrdbnet_arch import RRDBNet

    from ciaosr import benchmark_speed

    torch.manual_seed(0)
    esrgan = tmp_path / 'esrgan.pth'
    torch.save(RRDBNet(3, 3, scale=4, num_feat=8, num_block=1).state_dict(), esrgan)  # spandrel: 32 growth channels
    photo = tmp_path / 'photo.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / 'rows.json'
    argv = ['--pipeline', '--device', 'cpu', '--sizes', '12', '--scales', '2', '4', '--repeat', '1', '--threads', '1',
            '--models', str(tiny_model), '--realesrgan', str(esrgan), '--photo', str(photo), '--json', str(out)]
    threads = torch.get_num_threads()
    try:
        benchmark_speed.main(argv)
        rows = json.loads(out.read_text())
        assert [(row['path'].split(',')[0], row['lr'], row['scale']) for row in rows] == [
            ('Real-ESRGAN x4plus', 12, 2), ('Real-ESRGAN x4plus', 12, 4), (f'CiaoSR {tiny_model}', 12, 2),
            (f'CiaoSR {tiny_model}', 12, 4)]
        assert rows[0]['path'].endswith('then Lanczos4') and not rows[1]['path'].endswith('Lanczos4')
        assert all(row['seconds'] > 0 and row['first_seconds'] > 0 and row['peak_mb'] is None for row in rows)
        assert rows[3]['time_vs_realesrgan'] == pytest.approx(rows[3]['seconds'] / rows[1]['seconds'])
        assert rows[1]['time_vs_realesrgan'] == 1 and rows[2]['tile'] is None  # a 12-px image runs whole
        assert f'input: centre crops of {photo}' in capfd.readouterr().out

        def broken(*args):
            raise ValueError('the network produced NaN or infinite values, so nothing was written')
        monkeypatch.setattr(benchmark_speed.Upscaler, 'upscale', broken)
        benchmark_speed.main(argv)
    finally:
        torch.set_num_threads(threads)
    rows = json.loads(out.read_text())
    assert [row.get('error') for row in rows] == [None, None] + ['the network produced NaN or infinite values, so '
                                                                 'nothing was written'] * 2
    assert '| failed: the network produced NaN' in capfd.readouterr().out
    for argv, message in [(['--pipeline', '--device', 'cpu', '--sizes', '32', '--photo', str(photo), '--models',
                            str(tiny_model)], 'error: --photo is 40x30, smaller than the 32x32 crop of --sizes'),
                          (['--pipeline', '--repeat', '0'], "--repeat: expected a whole number >= 1, got '0'"),
                          (['--sizes', '4'], "--sizes: expected a whole number >= 8, got '4'"),  # a trial: tracebacks
                          (['--scales', '1'], '--scales: the scale must be a finite number > 1, got 1.0'),
                          (['--photo-scales', 'x0.5'], '--photo-scales: the scale must be a finite number > 1'),
                          (['--threads', '0'], "--threads: expected a whole number >= 1, got '0'"),
                          (['--tile', '3'], '--tile must be 0 (whole images) or at least 8 LR pixels, got 3'),
                          (['--photo-count', '0'], "--photo-count: expected a whole number >= 1, got '0'"),
                          (['--pipeline', '--weights', str(tiny_model)], '--weights is an option of the CPU paths'),
                          (['--device', 'cpu'], '--device is an option of --pipeline'),
                          (['--photo', str(photo)], '--photo is an option of --pipeline'),
                          (['--models', 'real'], '--models is an option of --pipeline')] + (
            [] if torch.cuda.is_available() else [(['--pipeline', '--device', 'cuda'], 'no CUDA device')]):
        with pytest.raises(SystemExit) as exit_info:
            benchmark_speed.main(argv)
        assert message in capfd.readouterr().err + str(exit_info.value.code)  # sys.exit('error: ...') prints at exit


@pytest.fixture(scope='module')
def iqa_weights(shared_data):
    return shared_data.parent / 'iqa_weights'


def test_lpips_reproduces_pyiqa_calibration(iqa_weights):
    """The lpips package with the offline weights gives the official LPIPS-alex values of pyiqa's calibration pairs."""
    pyiqa = pytest.importorskip('pyiqa')
    calibration = Path(pyiqa.__file__).resolve().parent.parent / 'ResultsCalibra'
    if not calibration.is_dir():
        pytest.skip("pyiqa's wheel ships no ResultsCalibra")
    lpips = create_lpips(iqa_weights)
    values = [lpips(to_tensor(load_rgb(calibration / 'dist_dir' / name)),
                    to_tensor(load_rgb(calibration / 'ref_dir' / name))).item()
              for name in ('I03.bmp', 'I04.bmp', 'I06.bmp', 'I08.bmp', 'I19.bmp')]
    assert values == pytest.approx([0.7237, 0.2572, 0.05079, 0.05205, 0.4253], abs=1e-4)


def test_lpips_without_usable_weights_is_unavailable(tmp_path):
    from safetensors.torch import save_file
    with pytest.raises(MetricUnavailable, match=f'parameter file missing: .*{LPIPS_FILE}'):
        create_lpips(tmp_path)
    save_file({'lin0.model.1.weight': torch.zeros(1, 64, 1, 1)}, tmp_path / LPIPS_FILE)
    with pytest.raises(MetricUnavailable, match='not LPIPS-alex of the lpips package: missing keys'):
        create_lpips(tmp_path)


@pytest.fixture
def real_world_root(shared_data, tmp_path):
    """A 'Set14' of two 96-px crops (the smallest side the Real-ESRGAN pipeline takes at x8): colour and gray."""
    return set14_crops(shared_data, tmp_path / 'data', [(100, 100, 196, 196), (200, 200, 296, 296)])


def test_realesrgan_degradation_is_seeded_per_image(real_world_root):
    img = benchmark.load_hr(real_world_root / 'Set14' / 'baboon.png')
    lr, hr = benchmark.realesrgan_pair(img, 4, 'Set14/baboon.png', seed=0)
    assert lr.shape == (1, 3, 24, 24) and np.array_equal(hr, img)
    np.testing.assert_allclose(lr.numpy() * 255, np.round(lr.numpy() * 255), atol=1e-4)  # 8-bit levels
    torch.manual_seed(123)  # whatever ran before: the same LR
    assert torch.equal(benchmark.realesrgan_pair(img, 4, 'Set14/baboon.png', seed=0)[0], lr)
    for other in [benchmark.realesrgan_pair(img, 4, 'Set14/baboon.png', seed=1)[0],
                  benchmark.realesrgan_pair(img, 4, 'Set14/other.png', seed=0)[0]]:
        assert not torch.equal(other, lr)
    gray = benchmark.load_hr(real_world_root / 'Set14' / 'bridge.png')
    lr, hr = benchmark.realesrgan_pair(gray, 8, 'Set14/bridge.png')
    assert lr.shape == (1, 3, 12, 12) and hr.shape == (96, 96)
    with pytest.raises(ValueError, match='needs at least 74 HR'):  # 73 rows, cropped to 72 at x4
        benchmark.realesrgan_pair(gray[:73], 4, 'Set14/bridge.png')
    reason = benchmark.too_small((96, 80), 8, min_sides=benchmark.REALESRGAN_MIN_SIDES)  # LR 12 x 10
    assert 'needs at least 74 HR and 11 LR px' in reason


def test_bsrgan_degradation_is_seeded_per_image(real_world_root):
    img = benchmark.load_hr(real_world_root / 'Set14' / 'baboon.png')
    lr, hr = benchmark.bsrgan_pair(img, 8, 'Set14/baboon.png')
    assert lr.shape == (1, 3, 12, 12) and np.array_equal(hr, img)
    state = torch.get_rng_state()
    assert torch.equal(benchmark.bsrgan_pair(img, 8, 'Set14/baboon.png')[0], lr)
    assert torch.equal(torch.get_rng_state(), state)  # the global generators are left alone
    assert not torch.equal(benchmark.bsrgan_pair(img, 8, 'Set14/baboon.png', seed=1)[0], lr)


def test_real_world_mode_perfect_method_and_saved_lr(real_world_root, tmp_path, iqa_weights):
    """A method that returns the HR scores PSNR inf (recorded as null with the reason), SSIM 1, LPIPS 0; every method
    sees the same seeded LR, which --save-lr writes."""
    images = {'Set14': benchmark.dataset_images(real_world_root, 'Set14')}
    pipeline = benchmark.DEGRADATIONS['realesrgan']
    hr_of = {}  # LR bytes -> HR: the oracle finds its HR only if it gets exactly the LR of a separate call
    for path in images['Set14']:
        for scale in (4, 8):
            lr, hr = benchmark.realesrgan_pair(benchmark.load_hr(path), scale, f'Set14/{path.name}')
            hr_of[lr.numpy().tobytes()] = to_tensor(to_rgb(hr))

    def oracle(lr, size):
        return hr_of[lr.numpy().tobytes()]

    records, left_out = benchmark.evaluate({'bicubic': bicubic_upsample, 'oracle': oracle}, images, [4, 8],
                                           create_lpips(iqa_weights), degradation=pipeline, save_lr=tmp_path / 'lr')
    assert left_out == []
    by_key = {(r['method'], r['scale']): r for r in records}
    for scale in (4, 8):
        perfect, bicubic = by_key['oracle', scale], by_key['bicubic', scale]
        assert perfect['psnr'] is None and perfect['psnr_unavailable'].startswith('SR equals HR (infinite PSNR)')
        assert perfect['ssim'] == pytest.approx(1) and perfect['lpips'] == pytest.approx(0, abs=1e-6)
        assert 10 < bicubic['psnr'] < 40 and bicubic['ssim'] < 0.9 and bicubic['lpips'] > 0.1
        assert bicubic['grid'] < 1 and len(bicubic['grid_profile']) == scale and bicubic['n_images'] == 2
    saved = np.asarray(Image.open(tmp_path / 'lr' / 'Set14' / 'x8' / 'bridge.png'))
    lr, _ = benchmark.realesrgan_pair(benchmark.load_hr(images['Set14'][1]), 8, 'Set14/bridge.png')
    np.testing.assert_array_equal(saved, to_pixels(lr[0]))


def test_real_world_cli_with_real_esrgan(real_world_root, tmp_path, tiny_model, iqa_weights, shared_data):
    out = {name: tmp_path / name for name in ('rw.json', 'rw.md')}
    records = benchmark.run([
        '--degradation', 'realesrgan', '--model', str(shared_data.parent / 'models' / 'RealESRGAN_x4plus.safetensors'),
        '--model', str(tiny_model), '--name', 'Real-ESRGAN', '--name', 'Tiny', '--data-root', str(real_world_root),
        '--datasets', 'Set14', '--limit', '1', '--scales', '4', '8', '--lpips', '--iqa-weights', str(iqa_weights),
        '--tile', '0', '--json', str(out['rw.json']), '--markdown', str(out['rw.md'])])
    assert json.loads(out['rw.json'].read_text()) == records
    assert [(r['method'], r['scale']) for r in records] == [
        (m, s) for m in ('bicubic', 'Real-ESRGAN', 'Tiny') for s in (4, 8)]
    for record in records:
        assert record['n_images'] == 1 and 0 < record['psnr'] < 60 and 0 < record['lpips'] < 1
        assert record['grid'] >= 0 and np.mean(record['grid_profile']) == pytest.approx(1)
    report = out['rw.md'].read_text()
    assert "LR by Real-ESRGAN's second-order degradations" in report and 'seed 0 per image and scale' in report
    assert '### LR-grid index' in report and '- Real-ESRGAN Set14 x8: ' in report
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--degradation', 'realesrgan', '--downsample', 'pil'])
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--degradation', 'bsrgan', '--scales', '0.5'])


@pytest.mark.parametrize('argv, status, message', [
    (['--limit', '-4'], 2, "argument --limit: expected a whole number >= 1, got '-4'"),  # a trial: scored 1 image
    (['--limit', '0'], 2, "argument --limit: expected a whole number >= 1, got '0'"),  # a trial: empty tables
    (['--seed', '3'], 2, '--seed belongs to --degradation'),  # a trial: ignored without a word
    (['--scales', '1'], 2, 'the bicubic protocol downscales the HR images: scales must be above 1, got 1'),
    (['--lpips', '--iqa-weights', 'nowhere'], 2, '--iqa-weights: no such folder: nowhere'),  # a trial: no LPIPS
    (['--tile', '64', '--tile-overlap', '33'], 2, 'at most 32 for --tile 64), got 33'),
    (['--datasets', 'twins', '--save-lr', 'lr'], 1, '--save-lr writes each LR image as NAME.png, but files of twins '
                                                    'share a name but for the suffix: a'),  # a trial: one overwrote
    (['--datasets', 'broken'], 1, 'no image could be scored (1 left out, above)'),  # a trial: exit status 0
])
def test_cli_errors_are_one_line(argv, status, message, tmp_path, monkeypatch, capsys):
    (tmp_path / 'twins').mkdir()
    for name in ('a.png', 'a.jpg'):
        Image.new('RGB', (24, 24)).save(tmp_path / 'twins' / name)
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'cut.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 20)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        benchmark.run(['--data-root', str(tmp_path), '--scales', '2', '--model', 'default', *argv])
    code = exit_info.value.code
    line = capsys.readouterr().err.strip().splitlines()[-1] if code == 2 else code
    assert (code if code == 2 else 1) == status and line.startswith('error: ') and message in line, line
    assert not (tmp_path / 'lr').exists()


def test_real_world_mode_blends_tiles_smoothly():
    """The official uniform tiling for the bicubic protocol, the tools' smooth one for real-world degradations
    (uniform averaging shows a deep trunk's tile borders), unless told."""
    assert benchmark.parse_args([]).blend == 'uniform'
    assert benchmark.parse_args(['--degradation', 'realesrgan']).blend == 'smooth'
    assert benchmark.parse_args(['--degradation', 'bsrgan', '--blend', 'uniform']).blend == 'uniform'


@pytest.mark.parametrize('native', [True, False])
def test_int8_speed_path_runs_like_the_cli(monkeypatch, native):
    """(f) of the speed benchmark autocasts to bf16 only where the CPU has it natively, as the CLI's --int8 does
    (elsewhere PyTorch emulates bf16: (f) took 81 s against the default path's 10 s on emulated AVX-VNNI)."""
    from ciaosr import benchmark_speed
    seen = []
    monkeypatch.setattr(benchmark_speed, 'cpu_has_bf16', lambda: native)
    monkeypatch.setattr(benchmark_speed, 'super_resolve',
                        lambda *args, **kwargs: seen.append(torch.is_autocast_enabled('cpu')))
    benchmark_speed.PATHS['f']({'int8': None}, None, 4)
    benchmark_speed.PATHS['e']({'openvino': None}, None, 4)
    assert seen == [native, True]
