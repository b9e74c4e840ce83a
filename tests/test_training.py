"""Issue 3: arbitrary-scale data, the BasicSR model, and the train entry (CPU, resume, 2-process DDP)."""
import math
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import pytest
import torch
import yaml
from basicsr.models import build_model

from ciaosr_arch.data import ArbitraryScaleSRDataset, SRBenchmarkDataset

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / 'shared'

TINY_NET = {'type': 'CiaoSR', 'encoder': 'edsr_baseline', 'encoder_opt': {'num_feat': 8, 'num_block': 1},
            'decoder_hidden': [16], 'key_hidden': [16], 'value_hidden': [16]}


def train_options(name, val_folder, **train):
    return {
        'name': name, 'model_type': 'CiaoSRModel', 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'T91', 'type': 'ArbitraryScaleSRDataset', 'gt_folders': [str(SHARED / 'data/train/T91')],
                      'lq_size': 16, 'sample_q': 64, 'batch_size_per_gpu': 2, 'num_worker_per_gpu': 0,
                      'dataset_enlarge_ratio': 1},
            'val_1': {'name': 'crops_x2', 'type': 'SRBenchmarkDataset', 'dataroot_gt': str(val_folder), 'scale': 2},
            'val_2': {'name': 'crops_x3.5', 'type': 'SRBenchmarkDataset', 'dataroot_gt': str(val_folder),
                      'scale': 3.5}},
        'network_g': TINY_NET,
        'path': {'pretrain_network_g': None, 'resume_state': None},
        'train': {'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 2, 'warmup_iter': -1,
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}, **train},
        'val': {'val_freq': 2, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 'scale', 'test_y_channel': True}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False, 'wandb': {'project': None}},
    }


@pytest.fixture
def experiment(tmp_path):
    """A unique experiment name with two small HR validation crops; its experiments/ folder is removed after."""
    val = tmp_path / 'val'
    val.mkdir()
    for name in ('baby', 'bird'):
        cv2.imwrite(str(val / f'{name}.png'), cv2.imread(str(SHARED / 'data/Set5' / f'{name}.png'))[:42, :46])
    name = f'test_{uuid.uuid4().hex[:8]}'
    yield name, val, tmp_path
    shutil.rmtree(ROOT / 'experiments' / name, ignore_errors=True)


def run_train(options, tmp_path, *extra, launcher=None):
    path = tmp_path / f'{options["name"]}.yml'
    path.write_text(yaml.safe_dump(options))
    entry = [str(ROOT / 'ciaosr_arch' / 'train.py'), '-opt', str(path), *extra]
    cmd = [sys.executable, *entry] if launcher is None else launcher + entry + ['--launcher', 'pytorch']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = sorted((ROOT / 'experiments' / options['name']).glob('train_*.log'))[-1]
    return log.read_text()


@pytest.mark.parametrize('scale_range', [(1.0, 1.0), (2.3, 2.3), (1.0, 4.0)])
def test_dataset_samples_at_arbitrary_scales(scale_range):
    data = ArbitraryScaleSRDataset({'gt_folders': [str(SHARED / 'data/train/T91')], 'lq_size': 24, 'sample_q': 300,
                                    'scale_min': scale_range[0], 'scale_max': scale_range[1]})
    for i in range(4):
        sample = data[i]
        gt_side = round(24 * sample['scale'])
        assert sample['lq'].shape == (3, 24, 24) and 0 <= sample['lq'].min() and sample['lq'].max() <= 1
        n = min(300, gt_side ** 2)
        assert sample['gt'].shape == sample['coord'].shape[:1] + (3,) == (n, 3)
        assert sample['coord'].abs().max() < 1 and len(set(map(tuple, sample['coord'].tolist()))) == n
        torch.testing.assert_close(sample['cell'], torch.full((n, 2), 2 / gt_side))
        # Coordinates sit on the pixel centres of the gt_side x gt_side HR crop.
        pixel = (sample['coord'] + 1) / 2 * gt_side - 0.5
        torch.testing.assert_close(pixel, pixel.round(), atol=1e-4, rtol=0)


def test_benchmark_dataset_makes_protocol_pairs():
    data = SRBenchmarkDataset({'dataroot_gt': str(SHARED / 'data/Set5'), 'scale': 3.3})
    sample = data[0]  # baby: 512 x 512 -> LR floor(512 / 3.3) = 155, HR cropped to round(155 * 3.3) = 512
    assert sample['lq'].shape == (3, 155, 155) and sample['gt'].shape == (3, 512, 512)


def test_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    opt = train_options('unit', SHARED)
    opt.update({'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1, 'auto_resume': False})
    opt['path'].update(dict.fromkeys(('experiments_root', 'models', 'training_states'), '/nonexistent'))
    model = build_model(opt)
    data = ArbitraryScaleSRDataset(opt['datasets']['train'])
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    losses = []
    for step in range(30):
        model.feed_data(batch)
        model.optimize_parameters(step)
        losses.append(model.log_dict['l_pix'])
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses


def test_train_validate_and_resume_on_cpu(experiment):
    name, val, tmp_path = experiment
    opt = train_options(name, val)
    log = run_train(opt, tmp_path)
    assert 'iter:       2' in log and 'Validation crops_x2' in log and 'Validation crops_x3.5' in log
    psnr = {float(line.split('psnr:')[1].split()[0]) for line in log.splitlines() if '# psnr:' in line}
    assert len(psnr) == 2 and all(math.isfinite(p) and p > 15 for p in psnr)  # one per validation scale
    assert (ROOT / 'experiments' / name / 'training_states' / '2.state').exists()

    opt['train']['total_iter'] = 4
    log = run_train(opt, tmp_path, '--auto_resume')
    assert 'Resuming training from epoch: 0, iter: 2.' in log
    assert 'iter:       3' in log and 'iter:       4' in log and 'iter:       1,' not in log
    assert (ROOT / 'experiments' / name / 'models' / 'net_g_4.pth').exists()


def test_two_process_ddp_on_cpu(experiment):
    name, val, tmp_path = experiment
    opt = train_options(name, val)
    del opt['datasets']['val_2']
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port',
                str(29500 + os.getpid() % 1000)]
    log = run_train(opt, tmp_path, launcher=torchrun)
    assert 'World size (gpu number): 2' in log
    assert '2 ranks agree' in log
