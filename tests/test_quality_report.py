"""No-reference quality report: offline pyiqa metrics, pyiqa's calibration values, the LR-grid index, the report's
outputs, other upscalers (spandrel networks, other tools' output folders), missing values and skipped files."""
import csv
import json
import pickle
import shutil
from pathlib import Path
from urllib.error import URLError

import cv2
import numpy as np
import pyiqa
import pytest
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet
from PIL import Image
from pyiqa.utils import download_util

from ciaosr import other_upscalers, quality_report, reporting
from ciaosr.cli import model_specs
from ciaosr.grid_index import GridIndexUndefined, grid_index
from ciaosr.iqa import MetricUnavailable, create_metric
from ciaosr_arch.evaluation import LUMA_WEIGHTS
from ciaosr_arch.image import to_pixels
from ciaosr_arch.resize import resize_pil

# pyiqa's calibration images (shipped in its wheel) and its published scores for them.
CALIBRATION_DIR = Path(pyiqa.__file__).resolve().parent.parent / 'ResultsCalibra' / 'dist_dir'
CALIBRATION_IMAGES = ['I03.bmp', 'I04.bmp', 'I06.bmp', 'I08.bmp', 'I19.bmp']
PUBLISHED = {
    'piqe': [100.0, 21.6242, 35.8646, 41.147, 76.9485],
    'niqe': [15.6538, 3.6549, 3.2342, 3.1921, 9.0722],
    'brisque': [94.6452, -0.1082, 1.0759, 5.1423, 66.8381],
}
# Seen across torch/BLAS builds: NIQE of I03 (~15.66) within 2e-3 (rel), BRISQUE (float32 SVR sums) within 8e-3.
TOLERANCE = {'piqe': 1e-3, 'niqe': 1e-3, 'brisque': 1e-2}
REPORT_IMAGES = ['Lincoln.png', 'chip.png', 'comic1.png']
LR_SIDE, SCALE = 24, 8


@pytest.fixture
def iqa_weights(shared_data):
    return shared_data.parent / 'iqa_weights'


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test if pyiqa tries to download anything."""
    def download(url, *args, **kwargs):
        raise AssertionError(f'download attempted: {url}')
    monkeypatch.setattr(download_util, 'download_url_to_file', download)


@pytest.mark.skipif(not CALIBRATION_DIR.is_dir(), reason="pyiqa's wheel ships no ResultsCalibra/dist_dir")
@pytest.mark.parametrize('name', ['piqe', 'niqe', 'brisque'])
def test_metrics_reproduce_pyiqa_calibration(name, iqa_weights, no_download):
    metric = create_metric(name, iqa_weights)
    values = [quality_report.score(name, metric, quality_report.load_rgb(CALIBRATION_DIR / f))
              for f in CALIBRATION_IMAGES]
    assert [error for _, error in values] == [None] * len(CALIBRATION_IMAGES)
    assert [value for value, _ in values] == pytest.approx(PUBLISHED[name], rel=5e-4, abs=TOLERANCE[name])


def write_unsafe_pickle(path):
    class Payload:
        def __reduce__(self):
            return print, ('this would run on load',)
    with open(path, 'wb') as f:
        pickle.dump(Payload(), f, protocol=2)


@pytest.mark.parametrize('name, write, expected', [
    ('niqe', None, 'parameter file missing: '),
    ('niqe', lambda p: p.write_bytes(b'not a mat file'), 'cannot load its parameters from '),
    ('brisque', write_unsafe_pickle, 'is not a plain tensor file'),
])
def test_metric_without_usable_parameters_is_unavailable(name, write, expected, tmp_path, no_download):
    param_file = tmp_path / {'niqe': 'niqe_modelparameters.mat', 'brisque': 'brisque_svm_weights.pth'}[name]
    if write:
        write(param_file)
    with pytest.raises(MetricUnavailable) as error:
        create_metric(name, tmp_path)
    reason = str(error.value)
    assert expected in reason and str(param_file) in reason


def test_failed_download_makes_metric_unavailable(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise URLError('Name or service not known')
    monkeypatch.setattr(download_util, 'DEFAULT_CACHE_DIR', str(tmp_path))  # an empty pyiqa cache
    monkeypatch.setattr(download_util, 'download_url_to_file', offline)
    with pytest.raises(MetricUnavailable) as error:
        create_metric('brisque')
    reason = str(error.value)
    assert "pyiqa's cache or its download: URLError" in reason


def run_report(tmp_path, shared_data, tiny_model, weights_dir, *extra):
    inputs = tmp_path / 'inputs'
    inputs.mkdir()
    for name in REPORT_IMAGES:
        shutil.copy(shared_data / 'RealSRSet' / name, inputs)
    return quality_report.run([
        '--inputs', str(inputs), '--scales', str(SCALE), '--model', str(tiny_model), '--out', str(tmp_path / 'out'),
        '--iqa-weights', str(weights_dir), '--max-input-side', str(LR_SIDE), '--tile', '16', '--tile-overlap', '4',
        '--device', 'cpu', *extra])


def test_report_on_three_small_images(tmp_path, shared_data, tiny_model, iqa_weights, no_download):
    weights_dir = tmp_path / 'weights'  # NIQE's parameters only: BRISQUE must come out unavailable
    weights_dir.mkdir()
    (weights_dir / 'niqe_modelparameters.mat').symlink_to(iqa_weights / 'niqe_modelparameters.mat')
    results = run_report(tmp_path, shared_data, tiny_model, weights_dir, '--bicubic',
                         '--metrics', 'piqe', 'niqe', 'brisque')
    out = tmp_path / 'out'

    # Records: one per (method, scale, metric), means of the per-image values; BRISQUE never a number.
    assert [(r['method'], r['scale'], r['metric']) for r in results['records']] == [
        (m, SCALE, k) for m in ('bicubic', 'tiny') for k in ('piqe', 'niqe', 'brisque')]
    assert json.loads((out / 'results.json').read_text()) == results
    for record in results['records']:
        values = [r['value'] for r in results['per_image']
                  if (r['method'], r['scale'], r['metric']) == (record['method'], SCALE, record['metric'])]
        if record['metric'] == 'brisque':
            assert values == [] and record['mean'] is None and record['n_images'] == 0
            assert 'brisque_svm_weights.pth' in record['unavailable']
        else:
            assert len(values) == len(REPORT_IMAGES) == record['n_images']
            assert record['mean'] == pytest.approx(np.mean(values))
            assert 'unavailable' not in record

    # Bicubic values match an independent computation: central crop, PIL bicubic, pyiqa.
    piqe = pyiqa.create_metric('piqe', device='cpu')
    side = LR_SIDE * SCALE
    bicubic_images = []
    for name in REPORT_IMAGES:
        img = Image.open(shared_data / 'RealSRSet' / name).convert('RGB')
        left, top = (img.width - LR_SIDE) // 2, (img.height - LR_SIDE) // 2
        up = np.asarray(img.crop((left, top, left + LR_SIDE, top + LR_SIDE)).resize((side, side), Image.BICUBIC))
        bicubic_images.append(up)
        expected = piqe(torch.from_numpy(up.copy()).permute(2, 0, 1)[None].float() / 255).item()
        reported = next(r['value'] for r in results['per_image']
                        if (r['image'], r['method'], r['metric']) == (name, 'bicubic', 'piqe'))
        assert reported == pytest.approx(expected, abs=1e-6)
    model_piqe = [r['value'] for r in results['per_image'] if (r['method'], r['metric']) == ('tiny', 'piqe')]
    bicubic_piqe = [r['value'] for r in results['per_image'] if (r['method'], r['metric']) == ('bicubic', 'piqe')]
    assert model_piqe != pytest.approx(bicubic_piqe)

    # Table 9 layout in Markdown and CSV: methods x (scale, metric); the NIQE variant is stated.
    header = ['Method', 'x8 PIQE', 'x8 NIQE', 'x8 BRISQUE']
    means = {(r['method'], r['metric']): r['mean'] for r in results['records']}
    expected_rows = [[m, f'{means[m, "piqe"]:.4f}', f'{means[m, "niqe"]:.4f}', 'unavailable']
                     for m in ('bicubic', 'tiny')]
    with open(out / 'table.csv', newline='') as f:
        assert list(csv.reader(f)) == [header, *expected_rows]
    markdown = (out / 'table.md').read_text()
    for row in [header, *expected_rows]:
        assert '| ' + ' | '.join(row) + ' |' in markdown
    assert 'Y channel of YIQ' in markdown and 'BRISQUE: unavailable: parameter file missing' in markdown
    assert len((out / 'per_image.csv').read_text().splitlines()) == 1 + len(REPORT_IMAGES) * 2 * 2

    # Contact sheets: input, bicubic, model; the bicubic cell is the whole 192 x 192 output at 1:1.
    cell, gap, label = quality_report.CELL, quality_report.GAP, quality_report.LABEL_H
    for name, bicubic in zip(REPORT_IMAGES, bicubic_images):
        sheet = Image.open(out / 'sheets' / f'{Path(name).stem}.png')
        assert sheet.size == (3 * (cell + gap) + gap, label + cell + 2 * gap)
        x = gap + cell + gap
        np.testing.assert_array_equal(np.asarray(sheet.convert('RGB'))[label:label + side, x:x + side], bicubic)

    # The same folder again with one of the images: the other two sheets, the earlier report's, go (a trial: they
    # stayed beside the new report's); a file of the user's in sheets/ stays.
    (out / 'sheets' / 'notes.png').write_bytes(b'mine')
    (tmp_path / 'one').mkdir()
    shutil.copy(shared_data / 'RealSRSet' / REPORT_IMAGES[0], tmp_path / 'one')
    quality_report.run(['--inputs', str(tmp_path / 'one'), '--scales', str(SCALE), '--metrics', 'piqe', '--out',
                        str(out), '--max-input-side', str(LR_SIDE), '--tile', '0', '--model', str(tiny_model),
                        '--device', 'cpu'])
    assert {p.name for p in (out / 'sheets').iterdir()} == {'notes.png', f'{Path(REPORT_IMAGES[0]).stem}.png'}


@pytest.fixture(scope='module')
def photo_lr(shared_data):
    """A 32 x 32 LR photo: baboon (Set14) reduced by 4 with PIL bicubic."""
    hr = Image.open(shared_data / 'Set14' / 'baboon.png').convert('RGB').crop((200, 200, 328, 328))
    return np.asarray(hr.resize((32, 32), Image.BICUBIC))


@pytest.mark.parametrize('scale', [4, 8, 16])
def test_grid_index_staircase_high_bicubic_low_shift_invariant(photo_lr, scale):
    def staircase(lr):  # nearest-neighbour upscale: every step is on an LR pixel boundary
        return lr.repeat(scale, axis=0).repeat(scale, axis=1)

    def bicubic(lr):
        return resize_pil(lr, (lr.shape[0] * scale, lr.shape[1] * scale))

    stairs = grid_index(staircase(photo_lr), scale)
    assert stairs.index == pytest.approx(scale)  # the largest possible value: all steps at phase s - 1
    assert stairs.profile == pytest.approx([0] * (scale - 1) + [scale])
    smooth = grid_index(bicubic(photo_lr), scale)
    assert smooth.index < 0.4 and np.mean(smooth.profile) == pytest.approx(1)
    # Shifting the photo by one LR pixel changes neither.
    assert grid_index(staircase(photo_lr[1:, 1:]), scale).index == pytest.approx(scale)
    assert grid_index(bicubic(photo_lr[1:, 1:]), scale).index == pytest.approx(smooth.index, abs=0.02)
    # Phases are counted from the output's first pixel: cropping k output pixels moves the peak by k.
    shifted = grid_index(staircase(photo_lr)[3:, 3:], scale).profile
    assert int(np.argmax(shifted)) == (scale - 1 - 3) % scale


def test_grid_index_inputs_and_errors(photo_lr):
    up = resize_pil(photo_lr, (128, 128))
    expected = grid_index(up, 4)
    # float tensors in any range, and gray images (the BT.601 luma of the RGB one) give the same profile.
    assert grid_index(torch.from_numpy(up.astype(np.float32)) / 255, 4).profile == pytest.approx(expected.profile)
    assert grid_index(up @ LUMA_WEIGHTS, 4).profile == pytest.approx(expected.profile)
    assert grid_index(up[..., 0], 4).profile != pytest.approx(expected.profile)  # one channel is not the luma
    for img, scale, message in [(up, 2.5, 'integer scale'), (up, 1, 'integer scale'), (up[:4], 4, 'at least 5 px'),
                                (np.full((40, 40, 3), 9, np.uint8), 4, 'flat')]:
        with pytest.raises(GridIndexUndefined, match=message):
            grid_index(img, scale)
    with pytest.raises(ValueError, match='shape'):
        grid_index(up[..., :2], 4)


def test_report_grid_index_and_profiles(tmp_path, shared_data, tiny_model, iqa_weights, no_download):
    results = run_report(tmp_path, shared_data, tiny_model, iqa_weights, '--bicubic', '--metrics', 'piqe', 'grid')
    out = tmp_path / 'out'
    grid = {r['method']: r for r in results['records'] if r['metric'] == 'grid'}
    assert list(grid) == ['bicubic', 'tiny'] and results['metrics']['grid']['parameters'] == 'none needed'
    per_image = [r for r in results['per_image'] if (r['method'], r['metric']) == ('bicubic', 'grid')]
    for row in per_image:  # the index of the bicubic output itself (PIL bicubic of the central crop)
        img = quality_report.load_rgb(shared_data / 'RealSRSet' / row['image'])
        top, left, h, w = quality_report.central_box(img.shape[:2], LR_SIDE)
        expected = grid_index(resize_pil(img[top:top + h, left:left + w], (h * SCALE, w * SCALE)), SCALE)
        assert row['value'] == pytest.approx(expected.index) and row['profile'] == pytest.approx(expected.profile)
    assert grid['bicubic']['mean'] == pytest.approx(np.mean([r['value'] for r in per_image]))
    assert grid['bicubic']['profile'] == pytest.approx(np.mean([r['profile'] for r in per_image], axis=0))
    markdown = (out / 'table.md').read_text()
    assert '| Method | x8 PIQE | x8 GRID |' in markdown and '## LR-grid phase profiles' in markdown
    assert '- tiny x8: ' + ' '.join(f'{v:.2f}' for v in grid['tiny']['profile']) in markdown
    with open(out / 'per_image.csv', newline='') as f:
        rows = [row for row in csv.DictReader(f) if row['metric'] == 'grid']
    assert len(rows) == 2 * len(REPORT_IMAGES) and all(len(row['profile'].split()) == SCALE for row in rows)


def save_rrdbnet(path):
    """A tiny BasicSR RRDBNet x4 (8 features, 1 block, spandrel's fixed 32 growth channels), seeded, saved as
    Real-ESRGAN releases are ({'params_ema': state_dict}); returns the network."""
    torch.manual_seed(1)
    net = RRDBNet(num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=1)
    torch.save({'params_ema': net.state_dict()}, path)
    return net.eval()


def run_rrdbnet(net, img):
    """uint8 [4h, 4w, 3] output of a BasicSR RRDBNet for a uint8 [h, w, 3] image, whole, fp32."""
    with torch.no_grad():
        return to_pixels(net(torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255)[0])


def test_fixed_scale_model_runs_once_and_resizes_with_lanczos(tmp_path):
    net = save_rrdbnet(tmp_path / 'tiny_rrdb.pth')
    upscaler = other_upscalers.FixedScaleUpscaler(tmp_path / 'tiny_rrdb.pth')
    assert (upscaler.architecture, upscaler.scale) == ('ESRGAN', 4)
    img = (np.random.default_rng(0).random((13, 10, 3)) * 255).astype(np.uint8)
    native = upscaler.native(img)
    assert native.shape == (52, 40, 3)
    assert np.abs(native.astype(int) - run_rrdbnet(net, img)).max() <= 1  # the same network (float op order aside)
    for size in ((26, 20), (52, 40), (104, 80), (32, 25)):  # x2 and x2.5 below its x4, x8 above
        out = upscaler(img, size)
        assert out.shape == (*size, 3)
        if size == (52, 40):
            np.testing.assert_array_equal(out, native)
            continue
        np.testing.assert_array_equal(out, cv2.resize(native, size[::-1], interpolation=cv2.INTER_LANCZOS4))
        assert not np.array_equal(out, cv2.resize(native, size[::-1], interpolation=cv2.INTER_CUBIC))
    assert upscaler.runs == 1
    upscaler(img.copy(), (52, 40))  # another array: the network runs again
    assert upscaler.runs == 2


def test_tiles_with_enough_context_match_the_whole_image(tmp_path):
    save_rrdbnet(tmp_path / 'tiny_rrdb.pth')
    model = other_upscalers.load_spandrel(tmp_path / 'tiny_rrdb.pth')
    lr = torch.rand(1, 3, 21, 13, generator=torch.Generator().manual_seed(0))
    whole = model(lr)
    # 17 LR convolutions plus 4 at x2/x4: a receptive-field radius of about 18 LR px, so 24 px of context suffice.
    torch.testing.assert_close(other_upscalers.run_tiled(model, lr, 4, tile=8, tile_pad=24), whole, atol=1e-5, rtol=0)
    assert (other_upscalers.run_tiled(model, lr, 4, tile=8, tile_pad=0) - whole).abs().max() > 1e-3


def test_real_esrgan_x4plus_loads_through_spandrel(shared_data):
    path = shared_data.parent / 'models' / 'RealESRGAN_x4plus.safetensors'
    if not path.is_file():
        pytest.skip(f'{path} is missing')
    assert not reporting.is_implicit_checkpoint(path)  # its 'arch' metadata is not ours (not even JSON)
    upscaler = other_upscalers.FixedScaleUpscaler(path)
    assert (upscaler.architecture, upscaler.scale, upscaler.model.tags) == ('ESRGAN', 4, ['64nf', '23nb'])
    assert next(upscaler.model.model.parameters()).dtype == torch.float32  # fp16 in the file, fp32 here
    assert upscaler(np.zeros((4, 5, 3), np.uint8), (40, 50)).shape == (40, 50, 3)


def piqe_value(img):
    return pyiqa.create_metric('piqe', device='cpu')(torch.from_numpy(img.copy()).permute(2, 0, 1)[None] / 255).item()


def values(results, method, scale, metric='piqe'):
    """{image: (value, error)} of one report cell."""
    return {r['image']: (r['value'], r.get('error')) for r in results['per_image']
            if (r['method'], r['scale'], r['metric']) == (method, scale, metric)}


def test_report_with_a_spandrel_model_below_and_above_its_scale(tmp_path, shared_data, monkeypatch):
    net = save_rrdbnet(tmp_path / 'tiny_rrdb.pth')
    passes = []
    run_tiled = other_upscalers.run_tiled
    monkeypatch.setattr(other_upscalers, 'run_tiled', lambda *args: passes.append(args[1].shape) or run_tiled(*args))
    inputs = tmp_path / 'inputs'
    inputs.mkdir()
    for name in REPORT_IMAGES[:2]:
        shutil.copy(shared_data / 'RealSRSet' / name, inputs)
    results = quality_report.run([
        '--inputs', str(inputs), '--scales', '2', '4', '8', '--model', str(tmp_path / 'tiny_rrdb.pth'),
        '--out', str(tmp_path / 'out'), '--metrics', 'piqe', '--max-input-side', str(LR_SIDE), '--tile', '16',
        '--tile-pad', '24', '--device', 'cpu'])
    assert passes == [(1, 3, LR_SIDE, LR_SIDE)] * 2  # one network pass per image for the three scales
    assert 'ESRGAN x4 via spandrel' in results['methods']['tiny_rrdb']
    cell, gap, label = quality_report.CELL, quality_report.GAP, quality_report.LABEL_H
    for name in REPORT_IMAGES[:2]:
        img = np.asarray(Image.open(shared_data / 'RealSRSet' / name).convert('RGB'))
        top, left = (img.shape[0] - LR_SIDE) // 2, (img.shape[1] - LR_SIDE) // 2
        native = run_rrdbnet(net, img[top:top + LR_SIDE, left:left + LR_SIDE])
        sheet = np.asarray(Image.open(tmp_path / 'out' / 'sheets' / f'{Path(name).stem}.png').convert('RGB'))
        for row, scale in enumerate((2, 4, 8)):  # x4 as it is; x2 and x8 by OpenCV Lanczos4 to round(24 * scale)
            side = LR_SIDE * scale
            expected = cv2.resize(native, (side, side), interpolation=cv2.INTER_LANCZOS4) if scale != 4 else native
            # The sheet shows each whole output (at most 192 px) at an integer zoom: read the model's cell back.
            y, x, zoom = label + row * (cell + gap), gap + 2 * (cell + gap), max(1, cell // side)
            shown = sheet[y:y + side * zoom:zoom, x:x + side * zoom:zoom].astype(int)
            # The outputs of a random tiny net are smooth: other filters differ by 1 in 1.5-12 % of the samples, so
            # a rare rounding flip (tiled vs whole, spandrel's vs BasicSR's op order) is allowed, not more.
            assert shown.shape == (side, side, 3) and np.abs(shown - expected).max() <= 1
            assert (shown != expected).mean() < 0.002
            if scale != 4:  # not another filter (on these smooth x2 outputs cubic gives the same pixels: area there)
                other = cv2.resize(native, (side, side), interpolation=cv2.INTER_AREA if scale < 4 else cv2.INTER_CUBIC)
                assert (shown != other).mean() > 0.01
            value, error = values(results, 'tiny_rrdb', scale)[name]
            assert error is None and value == pytest.approx(piqe_value(expected), abs=0.05)


def make_image(path, size, seed=0):
    Image.fromarray((np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)).save(path)


def test_report_with_an_outputs_folder_missing_values_and_skipped_files(tmp_path, shared_data, iqa_weights,
                                                                        no_download):
    save_rrdbnet(tmp_path / 'tiny.pth')  # the fastest model to run
    inputs, other = tmp_path / 'inputs', tmp_path / 'other_x4'
    inputs.mkdir()
    other.mkdir()
    for name in ('chip.png', 'Lincoln.png'):
        shutil.copy(shared_data / 'RealSRSet' / name, inputs)
    (inputs / 'broken.png').write_bytes(b'not a PNG')
    make_image(inputs / 'tiny.png', (3, 3))
    for hidden in ('._chip.png', '.DS_Store', '._other.png'):  # macOS metadata files, not images
        (inputs / hidden).write_bytes(b'\0\5\26\7 AppleDouble')
        (other / hidden).write_bytes(b'\0\5\26\7 AppleDouble')
    chip = np.asarray(Image.open(inputs / 'chip.png').convert('RGB'))
    chip_x4 = np.asarray(Image.fromarray(chip).resize((480, 480), Image.LANCZOS))
    Image.fromarray(chip_x4).save(other / 'chip.png')  # no output for Lincoln.png
    side = 20  # x4: 80 px, below NIQE's 96-px block: no NIQE value at x4
    results = quality_report.run([
        '--inputs', str(inputs), '--scales', '4', '8', '--model', str(tmp_path / 'tiny.pth'), '--bicubic',
        '--outputs', 'other', '4', str(other), '--out', str(tmp_path / 'out'), '--metrics', 'piqe', 'niqe',
        '--iqa-weights', str(iqa_weights),
        '--max-input-side', str(side), '--device', 'cpu'])
    out = tmp_path / 'out'

    # Skipped: the unreadable and the too small file, named; hidden files are not inputs at all.
    assert [(s['name'], s['reason'].split(' (')[0]) for s in results['skipped']] == [
        ('broken.png', 'not a readable image'), ('tiny.png', 'too small')]
    assert [i['name'] for i in results['images']] == ['Lincoln.png', 'chip.png']

    # The outside output is scored as it is, on the window that matches the report's crop (chip: 120 px, top 50).
    top = (120 - side) // 2
    window = chip_x4[4 * top:4 * (top + side), 4 * top:4 * (top + side)]
    assert values(results, 'other', 4)['chip.png'] == (pytest.approx(piqe_value(window), abs=1e-6), None)
    folder_reason = f'no file named Lincoln.* in {other}'
    assert values(results, 'other', 4)['Lincoln.png'] == (None, folder_reason)
    assert values(results, 'other', 8) == {name: (None, 'no --outputs folder for x8')
                                           for name in ('Lincoln.png', 'chip.png')}

    # Missing values are null with the reason: in the records, results.json (no NaN), per_image.csv, table.md.
    records = {(r['method'], r['scale'], r['metric']): r for r in results['records']}
    assert records['other', 4, 'piqe']['n_images'] == 1 and folder_reason in records['other', 4, 'piqe']['failed']
    assert records['other', 8, 'piqe']['mean'] is None and records['other', 8, 'piqe']['n_images'] == 0
    for method in ('bicubic', 'tiny', 'other'):
        assert records[method, 4, 'niqe']['mean'] is None
        assert 'smaller than the 96 px per side NIQE needs' in records[method, 4, 'niqe']['failed']
        assert records[method, 8, 'niqe']['mean'] is not None or method == 'other'

    def no_constants(name):
        raise AssertionError(f'{name} in results.json')
    assert json.loads((out / 'results.json').read_text(), parse_constant=no_constants) == results
    with open(out / 'per_image.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert {'image': 'Lincoln.png', 'method': 'other', 'scale': '4', 'metric': 'piqe', 'value': '',
            'error': folder_reason, 'profile': ''} in rows
    with open(out / 'table.csv', newline='') as f:
        table = {row[0]: row[1:] for row in csv.reader(f)}
    assert table['other'][0].endswith(' (n=1)') and table['other'][1:] == ['n/a'] * 3  # x4 PIQE, NIQE, x8 ...
    markdown = (out / 'table.md').read_text()
    assert f'- other x4 PIQE: {folder_reason} (1 image)' in markdown
    assert '- other x8 NIQE: no --outputs folder for x8 (2 images)' in markdown
    assert 'Skipped: broken.png: not a readable image' in markdown and 'tiny.png: too small (3x3' in markdown
    assert 'outputs of another tool, scored as they are (no resampling): x4 from' in markdown


def test_score_gives_reasons_instead_of_numbers():
    img = np.zeros((20, 30, 3), np.uint8)

    def fails(x):
        raise RuntimeError('linalg.svd: failed to converge\nmore detail')
    assert quality_report.score('niqe', None, img) == (None, 'smaller than the 96 px per side NIQE needs')
    assert quality_report.score('piqe', lambda x: torch.tensor(float('nan')), img) == (
        None, 'not a finite number (nan)')
    assert quality_report.score('piqe', fails, img) == (None, 'RuntimeError: linalg.svd: failed to converge')


def write_junk(path):
    path.write_bytes(b'not a model')
    return path


def write_foreign(path):
    torch.save({'encoder.weight': torch.zeros(2, 2)}, path)
    return path


def write_output(size):
    def write(path):
        path.mkdir()
        make_image(path / 'chip.jpg', size)
        return path
    return write


def write_file(path):
    path.write_text('')
    return path


def write_unusable_inputs(path):
    path.mkdir()
    (path / 'broken.png').write_bytes(b'not a PNG')
    make_image(path / 'tiny.png', (2, 300))
    return path


def write_twin_inputs(path):
    path.mkdir()
    make_image(path / 'chip.png', (20, 20))
    make_image(path / 'chip.jpg', (20, 20))
    return path


@pytest.mark.parametrize('make, extra, status, message', [
    (None, ['--model', 'missing.pth'], 1, '--model missing.pth: no such file, nor a shipped model (default, '),
    (None, ['--model', 'a.pth', '--model', 'b.pth', '--name', 'a'], 2, '--name was given 1 times for 2 models'),
    (('junk.pth', write_junk), ['--model', '{}'], 1,
     'junk.pth: neither a CiaoSR/LIIF checkpoint nor a model file spandrel can read (UnpicklingError: '),
    (('foreign.pth', write_foreign), ['--model', '{}'], 1,
     'foreign.pth: neither a CiaoSR/LIIF checkpoint nor an architecture spandrel knows'),
    (None, ['--outputs', 'x', '3', 'somewhere'], 2, '--outputs x 3 somewhere: x3 is not one of --scales (x8, x16)'),
    (None, ['--outputs', 'x', '8', 'nowhere'], 1, '--outputs x 8 nowhere: not a folder: nowhere'),
    (('x8', write_output((960, 958))), ['--outputs', 'x', '8', '{}'], 1,
     'chip.jpg is 958x960, but x8 of the 120x120 input is 960x960'),
    (('unusable', write_unusable_inputs), ['--inputs', '{}'], 1, 'no usable image in'),
    (('a_file', write_file), ['--out', '{}'], 1, 'a_file exists and is not a folder'),
    (None, ['--scales', '8', '0.5'], 2, '--scales must be at least 1 (the inputs are upscaled), got 0.5'),
    # a trial: --tile 4 ended in a traceback after the first image, --tile-overlap 100 ran on for minutes, a misspelt
    # --iqa-weights left metrics out, two inputs named chip shared one contact sheet, --threads was missing
    (None, ['--tile', '4'], 2, '--tile must be 0 (whole images) or at least 8 LR pixels, got 4'),
    (None, ['--tile', '16', '--tile-overlap', '100'], 2,
     '--tile-overlap must be between 0 and half the tile (at most 8 for --tile 16), got 100'),
    (None, ['--iqa-weights', 'nowhere'], 2, '--iqa-weights: no such folder: nowhere'),
    (('twins', write_twin_inputs), ['--inputs', '{}'], 1,
     '--inputs: files share a name but for the suffix, so their contact sheets (and --outputs) would be mixed up: '
     'chip'),
    (None, ['--threads', '0'], 2, "argument --threads: expected a whole number >= 1, got '0'"),
    (None, ['--max-input-side', '4'], 2, '--max-input-side must be 0 (whole images) or at least 8, got 4'),
    (None, ['--scales', 'x4', '0.5'], 2, '--scales must be at least 1 (the inputs are upscaled), got 0.5'),
])
def test_cli_errors_are_clear(make, extra, status, message, tmp_path, shared_data, capsys):
    """One line `error: ...`; exit status 2 for a command line that cannot be used, 1 for inputs, models or
    folders that cannot be used (Python prints the message of the latter on the way out)."""
    inputs = tmp_path / 'inputs'
    inputs.mkdir()
    shutil.copy(shared_data / 'RealSRSet' / 'chip.png', inputs)
    if make:
        made = str(make[1](tmp_path / make[0]))
        extra = [arg.format(made) for arg in extra]
    with pytest.raises(SystemExit) as exit_info:
        quality_report.run(['--inputs', str(inputs), '--out', str(tmp_path / 'out'), *extra])
    code = exit_info.value.code  # status 2: the line is printed first; else Python prints the message, status 1
    line = capsys.readouterr().err.removesuffix('\n') if code == 2 else code
    assert (code if code == 2 else 1) == status
    assert line.startswith('error: ') and message in line and '\n' not in line, line


def test_outputs_within_one_pixel_are_accepted(tmp_path):
    for stem, size in (('a', (25, 20)), ('b', (27, 20)), ('c', (28, 20)), ('d', (29, 20))):
        make_image(tmp_path / f'{stem}.png', size)
    folder = other_upscalers.OutputsFolder('x', {2.5: tmp_path})
    # x2.5 of 10 x 8 is 25 x 20 (exact); of 11 x 8, 27.5 x 20: floor (b) and ceil (c) are both accepted.
    folder.check({'a': (10, 8), 'b': (11, 8), 'c': (11, 8)})
    with pytest.raises(other_upscalers.UpscalerError, match=r'd.png is 20x29, but x2.5 of the 8x11 input is 20x27.5'):
        folder.check({'d': (11, 8)})


def test_scoring_other_tools_folders_upscales_nothing_unasked(tmp_path, monkeypatch):
    """--outputs without --model ran the default CiaoSR model on every image; it is a method only when asked."""
    (tmp_path / 'in').mkdir()
    (tmp_path / 'x4').mkdir()
    make_image(tmp_path / 'in' / 'a.png', (10, 8))
    make_image(tmp_path / 'x4' / 'a.png', (40, 32))
    inputs, _ = quality_report.load_inputs([tmp_path / 'in' / 'a.png'], 0)
    monkeypatch.setattr(reporting, 'load_model', lambda *a, **k: pytest.fail('a model was loaded'))
    argv = ['--inputs', 'in', '--out', 'out', '--scales', '4', '--outputs', 'other', '4', str(tmp_path / 'x4')]
    methods = quality_report.load_methods(quality_report.parse_args(argv), 'cpu', inputs)
    assert [method.name for method in methods] == ['bicubic', 'other']
    with pytest.raises(pytest.fail.Exception, match='a model was loaded'):  # asked for: loaded
        quality_report.load_methods(quality_report.parse_args([*argv, '--model', 'default']), 'cpu', inputs)


def test_method_names_are_shipped_names_or_file_stems():
    args = quality_report.parse_args(['--inputs', 'in', '--out', 'out', '--model', 'default', '--model', 'real-l1',
                                      '--model', 'x/RealESRGAN_x4plus.pth'])
    assert model_specs(args) == {
        'default': 'default', 'real-l1': 'real-l1', 'RealESRGAN_x4plus': 'x/RealESRGAN_x4plus.pth'}
    assert model_specs(quality_report.parse_args(['--inputs', 'in', '--out', 'out'])) == {
        'default': 'default'}
