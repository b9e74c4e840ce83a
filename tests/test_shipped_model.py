"""The shipped default model: loads with no path, records how it was made, beats bicubic, and README's
first command (the CLI on the demo inputs, default weights) works with it."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from ciaosr import upscale as inference_ciaosr
from ciaosr_arch import load_model, super_resolve
from ciaosr_arch.checkpoint import DEFAULT_WEIGHTS
from ciaosr_arch.evaluation import benchmark_pair, bicubic_upsample, psnr_ssim, to_uint8

ROOT = Path(__file__).resolve().parent.parent


def test_weights_carry_their_training_facts():
    with safe_open(DEFAULT_WEIGHTS, 'pt') as weights:
        meta = weights.metadata()
    assert meta['encoder'] == 'edsr_baseline' and meta['weights'] == 'EMA' and int(meta['iterations']) > 0
    assert (ROOT / meta['recipe']).is_file() and 'T91' in meta['data']
    records = json.loads(meta['benchmark'])
    assert {(r['method'], r['dataset']) for r in records} >= {('CiaoSR', 'B100'), ('Bicubic', 'B100')}


@pytest.mark.parametrize('scale', [2, 3.5, 8])
def test_beats_bicubic(shared_data, scale):
    hr = np.asarray(Image.open(shared_data / 'Set5' / 'butterfly.png').convert('RGB'))[64:192, 64:192]
    lr, hr = benchmark_pair(hr, scale)
    net = load_model()
    model = psnr_ssim(to_uint8(super_resolve(net, lr, size=hr.shape[:2])), hr, scale)[0]
    bicubic = psnr_ssim(to_uint8(bicubic_upsample(lr, hr.shape[:2])), hr, scale)[0]
    assert model > bicubic + 0.5


def test_readme_command_upscales_a_demo_input(tmp_path):
    demo = sorted((ROOT / 'inputs').glob('*.png'))[0]
    assert inference_ciaosr.main(['-i', str(demo), '-o', str(tmp_path), '-s', '2']) == 0
    with Image.open(tmp_path / f'{demo.stem}_out.png') as out, Image.open(demo) as source:
        assert out.size == (2 * source.width, 2 * source.height) and out.mode == source.mode
