"""BSRGAN's degradation model (realsr.bsrgan) and its mix with Real-ESRGAN's pipeline in RealPairSynthesis."""
import random

import numpy as np
import pytest
import torch
from basicsr.utils import set_random_seed
from torch.nn import functional as F

from ciaosr_arch.options import OptionsError
from realsr.bsrgan import (
    BSRGANDegradation,
    blur,
    bsrgan_degrade,
    camera_noise,
    channel_correlated_noise,
    gaussian_kernels,
    gaussian_noise,
    jpeg,
)
from realsr.degradations import ContiguousDiffJPEG, RealPairSynthesis

TINY_SYNTHESIS = {'lq_size': 16, 'query_window': 8}


def smooth_images(batch=2, side=64, seed=0):
    """Smooth random images in [0.1, 0.9] (bicubic-upsampled 8x8 noise): [batch, 3, side, side]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 8, 8, generator=generator) * 0.8 + 0.1
    return F.interpolate(coarse, size=(side, side), mode='bicubic', align_corners=False).clamp(0.1, 0.9)


def high_frequency_energy(img):
    """Mean squared horizontal and vertical pixel differences per sample: [B]."""
    return (img.diff(dim=-1) ** 2).mean((1, 2, 3)) + (img.diff(dim=-2) ** 2).mean((1, 2, 3))


@pytest.mark.parametrize('scale', [1.0, 1.37, 2.0, 2.5, 3.9, 4.0])
@pytest.mark.parametrize('side', [(64, 64), (57, 70)])
def test_shapes_range_and_quantisation(scale, side):
    gt = F.interpolate(smooth_images(), size=side, mode='bilinear')
    module = BSRGANDegradation()
    for seed in range(4):  # different orders, resizes and branches
        set_random_seed(seed)
        lq = module(gt, scale)
        assert lq.shape == (2, 3, round(side[0] / scale), round(side[1] / scale)) and lq.dtype == torch.float32
        assert 0 <= lq.min() and lq.max() <= 1 and torch.equal(lq, (lq * 255).round() / 255)


def test_seed_fixes_the_output_and_leaves_the_generators_alone():
    gt = smooth_images()
    set_random_seed(11)
    before = random.random(), np.random.uniform(), torch.rand(1).item()
    set_random_seed(11)
    first = bsrgan_degrade(gt, 2.7, seed=5)
    assert (random.random(), np.random.uniform(), torch.rand(1).item()) == before
    assert torch.equal(first, bsrgan_degrade(gt, 2.7, seed=5))
    assert not torch.equal(first, bsrgan_degrade(gt, 2.7, seed=6))
    set_random_seed(5)  # the same draws as the global generators seeded by BasicSR
    assert torch.equal(first, BSRGANDegradation()(gt, 2.7))


def test_blur_lowers_high_frequency_energy_with_per_sample_kernels():
    set_random_seed(0)
    kernels = gaussian_kernels(8, sf=4)
    assert kernels.shape == (8, 25, 25)
    torch.testing.assert_close(kernels.sum((1, 2)), torch.ones(8))
    assert len({round(k.max().item(), 6) for k in kernels}) == 8
    img = torch.rand(8, 3, 32, 32)
    assert (high_frequency_energy(blur(img, kernels)) < high_frequency_energy(img)).all()
    tiny = blur(img[:, :, :5, :6], kernels)  # kernels cropped to what reflect padding allows
    assert tiny.shape == (8, 3, 5, 6) and (high_frequency_energy(tiny) < high_frequency_energy(img[:, :, :5, :6])).all()


@pytest.mark.parametrize('noise', [gaussian_noise, channel_correlated_noise])
def test_noise_raises_high_frequency_energy(noise):
    img = smooth_images(4)
    set_random_seed(1)
    noisy = noise(img)
    assert noisy.shape == img.shape and 0 <= noisy.min() and noisy.max() <= 1
    assert (high_frequency_energy(noisy) > 2 * high_frequency_energy(img)).all()


def test_channel_correlated_noise_has_a_random_covariance_per_sample():
    img = torch.full((2, 3, 128, 128), 0.5)
    set_random_seed(2)
    residual = (channel_correlated_noise(img) - img).flatten(2)
    covariances = [torch.cov(r) for r in residual]
    assert all(c.diagonal().max() < (25 / 255) ** 2 * 1.2 for c in covariances)
    assert any(c.triu(1).abs().max() > 0.1 * c.diagonal().max() for c in covariances)  # correlated channels
    assert not torch.allclose(covariances[0], covariances[1], rtol=0.2, atol=0)


def test_jpeg_makes_8x8_blocks():
    set_random_seed(3)
    img = (smooth_images(4, side=64) + torch.randn(4, 3, 64, 64) * 0.02).clamp(0, 1)
    out = jpeg(img, ContiguousDiffJPEG(differentiable=False))
    steps = (out.diff(dim=-1) - img.diff(dim=-1)).abs().mean((0, 1, 2))  # [63]: step j is between columns j, j + 1
    at_block_edges = steps[7::8].mean()
    inside = torch.cat([steps[j::8] for j in range(7)]).mean()
    assert at_block_edges > 1.2 * inside


def test_camera_noise_is_signal_dependent_in_linear_space():
    img = torch.cat([torch.full((4, 3, 64, 32), 0.2), torch.full((4, 3, 64, 32), 0.9)], -1)
    set_random_seed(4)
    out = camera_noise(img, prob=1)
    residual = out ** 2.2 - img ** 2.2
    dark, bright = residual[..., :32].var((1, 2, 3)), residual[..., 32:].var((1, 2, 3))
    assert (bright > 5 * dark).all() and (dark > 0).all()
    assert torch.equal(camera_noise(img, prob=0), img)


@pytest.fixture
def batch():
    """A dataset-like batch: GT [2, 3, 64, 64] and identity kernels."""
    pulse = torch.zeros(2, 21, 21)
    pulse[:, 10, 10] = 1
    return smooth_images(2, side=64), pulse, pulse, pulse


def count_calls(synthesis, monkeypatch):
    """Counts of the batches that each pipeline of `synthesis` degrades, updated as it runs."""
    counts = {'bsrgan': 0, 'realesrgan': 0}

    def counting(name, method):
        def counted(*args):
            counts[name] += 1
            return method(*args)
        return counted

    monkeypatch.setattr(synthesis.bsrgan, 'forward', counting('bsrgan', synthesis.bsrgan.forward))
    monkeypatch.setattr(synthesis, 'degrade', counting('realesrgan', synthesis.degrade))
    return counts


@pytest.mark.parametrize('prob, expected', [(0, {'bsrgan': 0, 'realesrgan': 10}),
                                            (1, {'bsrgan': 10, 'realesrgan': 0}), (0.5, None)])
def test_bsrgan_prob_picks_the_pipeline_per_batch(batch, monkeypatch, prob, expected):
    synthesis = RealPairSynthesis({**TINY_SYNTHESIS, 'bsrgan_prob': prob})
    counts = count_calls(synthesis, monkeypatch)
    set_random_seed(0)
    for _ in range(10):
        pair = synthesis(*batch)
        assert pair['lq'].shape == (2, 3, 16, 16) and pair['gt'].shape == pair['gt_usm'].shape == (2, 3, 8, 8)
        assert 1 <= pair['scale'] <= 4 and torch.equal(pair['lq'], (pair['lq'] * 255).round() / 255)
    if expected:
        assert counts == expected
    else:
        assert counts['bsrgan'] >= 2 and counts['realesrgan'] >= 2


def test_bsrgan_batches_degrade_the_sharpened_gt(batch):
    synthesis = RealPairSynthesis({**TINY_SYNTHESIS, 'bsrgan_prob': 1})
    set_random_seed(9)
    pair = synthesis(*batch)
    set_random_seed(9)
    np.random.uniform()  # the pipeline choice
    scale = random.uniform(1, 4)
    assert scale == pair['scale']
    expected = BSRGANDegradation()(synthesis.usm_sharpener(batch[0]), scale)
    assert expected.shape[-1] == round(64 / scale)
    assert any(torch.equal(pair['lq'][0], expected[0, :, i:i + 16, j:j + 16])
               for i in range(expected.shape[-2] - 15) for j in range(expected.shape[-1] - 15))


def test_scales_below_one_are_refused():
    with pytest.raises(ValueError, match='scale 0.5 < 1'):
        bsrgan_degrade(smooth_images(), 0.5)


def test_unknown_options_are_refused():
    with pytest.raises(OptionsError, match="unknown option 'bsrgan_probability' \\(did you mean 'bsrgan_prob'\\?\\)"):
        RealPairSynthesis({'bsrgan_probability': 0.5})
