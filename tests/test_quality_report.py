"""No-reference quality report (issue 6): offline pyiqa metrics, pyiqa's calibration values, the report's outputs."""
import csv
import json
import pickle
import shutil
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pyiqa
import pytest
import torch
from PIL import Image
from pyiqa.utils import download_util

from inference import quality_report
from inference.iqa import create_metric

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
    values = [quality_report.score(metric, quality_report.load_rgb(CALIBRATION_DIR / f)) for f in CALIBRATION_IMAGES]
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
    reason = create_metric(name, tmp_path)
    assert isinstance(reason, str)
    assert expected in reason and str(param_file) in reason


def test_failed_download_makes_metric_unavailable(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise URLError('Name or service not known')
    monkeypatch.setattr(download_util, 'DEFAULT_CACHE_DIR', str(tmp_path))  # an empty pyiqa cache
    monkeypatch.setattr(download_util, 'download_url_to_file', offline)
    reason = create_metric('brisque')
    assert isinstance(reason, str)
    assert "pyiqa's cache or its download: URLError" in reason


def run_report(tmp_path, shared_data, tiny_model, weights_dir, *extra):
    inputs = tmp_path / 'inputs'
    inputs.mkdir()
    for name in REPORT_IMAGES:
        shutil.copy(shared_data / 'RealSRSet' / name, inputs)
    return quality_report.main([
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


@pytest.mark.parametrize('broken_image, extra, message', [
    (False, ['--model', 'missing.pth'], 'checkpoint not found: missing.pth'),
    (False, ['--model', 'a.pth', '--model', 'b.pth', '--name', 'a'], '--name was given 1 times for 2 models'),
    (True, [], 'broken.png: not a readable image'),
])
def test_cli_errors_are_clear(broken_image, extra, message, tmp_path, shared_data):
    inputs = tmp_path / 'inputs'
    inputs.mkdir()
    shutil.copy(shared_data / 'RealSRSet' / 'chip.png', inputs)
    if broken_image:
        (inputs / 'broken.png').write_bytes(b'not a PNG')
    with pytest.raises(SystemExit) as exit_info:
        quality_report.main(['--inputs', str(inputs), '--out', str(tmp_path / 'out'), *extra])
    assert message in str(exit_info.value)


def test_default_model_is_the_shipped_weights():
    args = quality_report.parse_args(['--inputs', 'in', '--out', 'out', '--model', 'default', '--model', 'x/real.pth'])
    assert quality_report.model_paths(args) == {'ciaosr_edsr_baseline': None, 'real': 'x/real.pth'}
    assert quality_report.model_paths(quality_report.parse_args(['--inputs', 'in', '--out', 'out'])) == {
        'ciaosr_edsr_baseline': None}
