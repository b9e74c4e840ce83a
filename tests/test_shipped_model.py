"""The shipped models: load by name, record how they were made, are described by one table that README's follows;
the default beats bicubic, and README's first command (the CLI on the demo inputs, default weights) works with it."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open

from ciaosr import upscale as inference_ciaosr
from ciaosr_arch import load_model, super_resolve
from ciaosr_arch.evaluation import benchmark_pair, bicubic_upsample, psnr_ssim
from ciaosr_arch.image import to_pixels
from ciaosr_arch.shipped import SHIPPED_MODELS, shipped_weights

ROOT = Path(__file__).resolve().parent.parent


def test_weights_carry_their_training_facts():
    with safe_open(shipped_weights('default'), 'pt') as weights:
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
    assert meta['version'] == '4' and meta['weights'] == 'EMA' and meta['stages'].startswith('1')
    assert gan.arch['encoder_opt']['upsampler'] and gan.has_base_image  # a residual over Real-ESRGAN x4plus
    assert meta['losses'].startswith('L1') and 'continuity' in meta['losses'] and 'LR-grid' in meta['losses']
    assert 'Real-ESRGAN x4plus' in meta['encoder'] and 'Lanczos' in meta['encoder']
    assert 'BSRGAN' in meta['degradations'] and 'T91' in meta['data'] and 'BSD-3-Clause' in meta['licence']
    assert int(meta['iterations']) > 0 and 'U[4, 8]' in meta['degradations']
    assert all((ROOT / recipe).is_file() for recipe in meta['recipe'].split(', '))
    assert shipped_weights('real').stat().st_size < 40 * 2 ** 20
    lr = torch.rand(1, 3, 12, 10)
    assert super_resolve(gan, lr, scale=2.5).shape == super_resolve(stage1, lr, scale=2.5).shape == (1, 3, 30, 25)


def test_readme_table_mirrors_the_shipped_models_table():
    """README's "Shipped models" table lists the names and files of `SHIPPED_MODELS`, in its order."""
    section = (ROOT / 'README.md').read_text().split('\n## Shipped models\n')[1].split('\n#')[0]
    rows = re.findall(r'^\| `([^`]+)` \| `([^`]+)`', section, re.MULTILINE)
    assert rows == [(name, model.file) for name, model in SHIPPED_MODELS.items()]


def test_shipped_models_table_agrees_with_the_files():
    """Every model of the table is there; its trained scale range is its recipes' and its licence the one its file
    records (where it records one)."""
    for name, model in SHIPPED_MODELS.items():
        with safe_open(shipped_weights(name), 'pt') as weights:
            meta = weights.metadata()
        assert meta.get('licence', model.licence) == model.licence and model.use and model.description
        for recipe in meta['recipe'].split(', '):
            options = yaml.safe_load((ROOT / recipe).read_text())
            train = options['datasets']['train']
            scales = options['degradation']['scale_range'] if 'degradation' in options else \
                [train['scale_min'], train['scale_max']]
            assert tuple(scales) == model.scales, (name, recipe)
