"""Arbitrary-scale data, the BasicSR model, and the train entry (CPU, resume, 2-process DDP).
Also: corrupt and too-small training images, unusable pretrained weights, atomic saves,
auto-resume past truncated states, non-finite losses."""
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.models import build_model
from safetensors.torch import save_file

from ciaosr_arch import CheckpointError, CiaoSR
from ciaosr_arch.checkpoint import read_checkpoint
from ciaosr_arch.compat import (
    continued_sampler_class,
    load_resume_state,
    make_basicsr_trainer_device_agnostic,
    samples_used,
)
from ciaosr_arch.data import ArbitraryScaleSRDataset, SRBenchmarkDataset
from ciaosr_arch.models.ciaosr_model import TrainingDiverged, under_autocast
from ciaosr_arch.options import OptionsError

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
    """A unique experiment name with two small HR validation crops, and the run's working directory (tmp)."""
    val = tmp_path / 'val'
    val.mkdir()
    for name in ('baby', 'bird'):
        cv2.imwrite(str(val / f'{name}.png'), cv2.imread(str(SHARED / 'data/Set5' / f'{name}.png'))[:42, :46])
    return f'test_{uuid.uuid4().hex[:8]}', val, tmp_path


def run_train(options, tmp_path, *extra, launcher=None, status=0):
    """Run ciaosr_arch/train.py on `options` in tmp_path (experiments/ goes there); (the run's log file text or ''
    if none, stdout + stderr)."""
    path = tmp_path / f'{options["name"]}.yml'
    path.write_text(yaml.safe_dump(options))
    entry = [str(ROOT / 'ciaosr_arch' / 'train.py'), '-opt', str(path), *extra]
    cmd = [sys.executable, *entry] if launcher is None else launcher + entry + ['--launcher', 'pytorch']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == status, result.stdout[-3000:] + result.stderr[-3000:]
    logs = sorted((tmp_path / 'experiments' / options['name']).glob('train_*.log'))
    return (logs[-1].read_text() if logs else ''), result.stdout + result.stderr


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


def epoch_draws(dataset, key, epochs=2, seed=3):
    """`key` of every sample of `epochs` epochs through BasicSR's data loader with 2 workers (its worker_init_fn as
    the trainer has it, `compat.seed_worker`), in sample order: [epochs][samples]."""
    from basicsr.data import build_dataloader

    make_basicsr_trainer_device_agnostic()
    torch.manual_seed(seed)  # as BasicSR's set_random_seed: the workers' PyTorch seeds follow it
    loader = build_dataloader(dataset, {'phase': 'train', 'num_worker_per_gpu': 2, 'batch_size_per_gpu': 1,
                                        'use_shuffle': False}, num_gpu=0, seed=seed)
    handler = signal.getsignal(signal.SIGCHLD)
    try:
        return [[batch[key].flatten().tolist() for batch in loader] for _ in range(epochs)]
    finally:  # PyTorch's loader leaves its SIGCHLD handler behind, and this test process later crashed (SIGSEGV) when
        # the child processes of other tests ended
        signal.signal(signal.SIGCHLD, handler)


def test_each_epoch_draws_anew_and_follows_the_seed():
    """A review: BasicSR's worker_init_fn seeds the workers' generators the same way every epoch, so every epoch drew
    the same scales and crops (and the real-world dataset the same blur kernels)."""
    import realsr  # noqa: F401  (registers RealWorldSRDataset)
    from realsr.data import RealWorldSRDataset

    folder = {'gt_folders': [str(SHARED / 'data/train/T91')]}
    bicubic = ArbitraryScaleSRDataset({**folder, 'lq_size': 8, 'sample_q': 4})
    bicubic.paths = bicubic.paths[:4]
    real = RealWorldSRDataset({**folder, 'gt_size': 16})
    real.paths = real.paths[:4]
    for dataset, key in ((bicubic, 'scale'), (real, 'kernel1')):
        first, second = epoch_draws(dataset, key)
        assert first != second, key
        assert epoch_draws(dataset, key) == [first, second], key  # the same seed: the same draws


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
    log, _ = run_train(opt, tmp_path)
    assert 'iter:       2' in log and 'Validation crops_x2' in log and 'Validation crops_x3.5' in log
    psnr = {float(line.split('psnr:')[1].split()[0]) for line in log.splitlines() if '# psnr:' in line}
    assert len(psnr) == 2 and all(math.isfinite(p) and p > 15 for p in psnr)  # one per validation scale
    states = tmp_path / 'experiments' / name / 'training_states'
    assert (states / '2.state').exists()

    # A run killed while saving iteration 3 (with BasicSR's non-atomic saves) left a truncated state.
    (states / '3.state').write_bytes((states / '2.state').read_bytes()[:1000])
    opt['train']['total_iter'] = 4
    log, output = run_train(opt, tmp_path, '--auto_resume')
    assert f'auto_resume: skipping {states / "3.state"}: not a readable training state' in output
    assert 'Resuming training from epoch: 0, iter: 2.' in log
    # new data: the epoch goes on after the 2 x 2 samples used (BasicSR started it again), with new random crops
    assert "Resumed at iteration 2: epoch 0 goes on from sample 4 of this rank's 91; random seed 2." in log
    assert 'iter:       3' in log and 'iter:       4' in log and 'iter:       1,' not in log
    assert (tmp_path / 'experiments' / name / 'models' / 'net_g_4.pth').exists()
    assert not list((tmp_path / 'experiments' / name).rglob('*.part'))  # saves leave no temporary files


def test_a_resumed_epoch_goes_on_from_the_next_sample():
    sampler_class = continued_sampler_class()
    full, resumed = sampler_class(range(10), 1, 0, ratio=3), sampler_class(range(10), 1, 0, ratio=3)
    resumed.continue_at(0, 8)
    assert list(resumed) == list(full)[8:] and len(list(full)) == 30
    full.set_epoch(1)
    resumed.set_epoch(1)  # the next epochs whole, in BasicSR's order
    assert list(resumed) == list(full) != list(sampler_class(range(10), 1, 0, ratio=3))
    assert samples_used(iteration=50, epoch=1, batches_per_epoch=45, batch_size=4) == 20  # 5 batches into epoch 1


@pytest.mark.parametrize('freeze_encoder', [False, True])
def test_two_process_ddp_on_cpu(experiment, freeze_encoder):
    """With a frozen encoder too (a review: frozen after DistributedDataParallel was built, the second step failed,
    'Expected to have finished reduction in the prior iteration')."""
    name, val, tmp_path = experiment
    opt = train_options(name, val, freeze_encoder=freeze_encoder)
    opt['path']['pretrain_network_g'] = str(tiny_net_file(tmp_path / 'start.safetensors'))
    del opt['datasets']['val_2']
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port',
                str(29500 + os.getpid() % 1000)]
    log, _ = run_train(opt, tmp_path, launcher=torchrun)
    assert 'World size (gpu number): 2' in log
    assert '2 ranks agree' in log
    start = read_checkpoint(tmp_path / 'start.safetensors')[0]
    trained = torch.load(tmp_path / 'experiments' / name / 'models' / 'net_g_2.pth', weights_only=True)['params']
    changed = {k for k in start if not torch.equal(start[k], trained[k])}
    encoder = set(CiaoSR(**{k: v for k, v in TINY_NET.items() if k != 'type'}).encoder.state_dict())
    assert {k for k in start if k.startswith('imnet_')} <= changed and bool(changed & encoder) is not freeze_encoder


def test_more_torchrun_ranks_than_gpus_are_refused_in_one_line(monkeypatch):
    """A review: `torch.cuda.set_device(LOCAL_RANK)` failed with 'invalid device ordinal' and a traceback."""
    import basicsr.train
    import basicsr.utils.options
    for module, name in ((basicsr.train, 'load_resume_state'), (basicsr.train, 'create_train_val_dataloader'),
                         (basicsr.train, 'EnlargedSampler'), (basicsr.utils.options, 'init_dist')):
        monkeypatch.setattr(module, name, getattr(module, name))  # put back after the test
    make_basicsr_trainer_device_agnostic()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setenv('LOCAL_RANK', '2')
    with pytest.raises(OptionsError, match=r'^--launcher pytorch: local rank 2 has no GPU of its own \(2 visible\): '
                                           r'start at most 2 processes per machine'):
        basicsr.utils.options.init_dist('pytorch')


def test_data_parallel_replicas_keep_the_autocast_dtype():
    """A review: torch's DataParallel runs each replica in a thread of its own under autocast with only `enabled` set,
    so the dtype is that thread's default (float16 on CUDA, bfloat16 on the CPU), not the recipe's."""
    seen = []
    call = under_autocast(lambda: seen.append(torch.get_autocast_dtype('cpu')), 'cpu', torch.float16)

    def replica_thread(function):
        with torch.autocast('cpu', enabled=True):  # as torch's parallel_apply enters it
            function()
    for function in (call, lambda: seen.append(torch.get_autocast_dtype('cpu'))):
        thread = threading.Thread(target=replica_thread, args=(function,))
        thread.start()
        thread.join()
    assert seen == [torch.float16, torch.bfloat16]  # the wrapped replica's dtype; a bare one's default


def image_folder(tmp_path, sizes, name='images'):
    """A folder of random RGB PNGs of the given (height, width) sizes, named 0.png, 1.png, ..."""
    folder = tmp_path / name
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f'{i}.png'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return folder


def test_dataset_checks_the_largest_crop_when_built(tmp_path):
    folder = image_folder(tmp_path, [(50, 70), (80, 52)])
    opt = {'dataroot_gt': str(folder), 'lq_size': 16, 'sample_q': 16, 'scale_min': 1.0}
    with pytest.raises(ValueError, match=r'at least 53 px on their short side \(lq_size 16 x scale_max 3.3, rounded\)'
                                         r', but the largest short side is 52 px \(.*1.png\)'):
        ArbitraryScaleSRDataset({**opt, 'scale_max': 3.3})  # round(16 x 3.3) = round(52.8) = 53
    data = ArbitraryScaleSRDataset({**opt, 'scale_max': 3.25})  # round(52.0) = 52: every drawn scale fits
    for i in range(40):
        sample = data[i % 2]
        assert round(16 * sample['scale']) <= 52 and sample['lq'].shape == (3, 16, 16)


@pytest.fixture
def basicsr_warnings():
    """The messages of the warnings BasicSR's logger gets during the test."""
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger('basicsr').addHandler(handler)
    yield messages
    logging.getLogger('basicsr').removeHandler(handler)


def test_dataset_names_unreadable_and_unused_images(tmp_path, basicsr_warnings):
    folder = image_folder(tmp_path, [(64, 64), (10, 30)])
    (folder / 'notes.png').write_bytes(b'not an image')
    (folder / 'empty.jpg').write_bytes(b'')
    opt = {'dataroot_gt': str(folder), 'lq_size': 16, 'scale_max': 4, 'sample_q': 16}
    with pytest.raises(ValueError, match=r'2 training file\(s\) are not readable images: .*empty.jpg \(.*notes.png'):
        ArbitraryScaleSRDataset(opt)
    (folder / 'notes.png').unlink()
    (folder / 'empty.jpg').unlink()
    ArbitraryScaleSRDataset(opt)
    assert any('1 of 2 training images are smaller than the smallest crop (16 px) and are never used' in m
               and '1.png' in m for m in basicsr_warnings), basicsr_warnings


def test_dataset_skips_an_image_whose_data_is_truncated(tmp_path, basicsr_warnings):
    folder = image_folder(tmp_path, [(64, 64), (70, 70)])
    broken = folder / '1.png'
    broken.write_bytes(broken.read_bytes()[:2000])  # the header reads, the pixels do not
    opt = {'dataroot_gt': str(folder), 'lq_size': 16, 'scale_max': 4, 'sample_q': 16}
    with pytest.raises(ValueError, match=f'{broken}: the image data cannot be decoded'):
        ArbitraryScaleSRDataset({**opt, 'cache_images': True})  # decoded when built: refused then
    data = ArbitraryScaleSRDataset(opt)
    samples = [data[1] for _ in range(3)]
    assert all(sample['gt_path'].endswith('0.png') for sample in samples)
    assert basicsr_warnings == [f'skipping a training image: {broken}: the image data cannot be decoded (truncated or '
                        'corrupt)'], basicsr_warnings  # once: the file is not tried again


@pytest.fixture
def model(tmp_path):
    """A CiaoSRModel of TINY_NET whose models/ and training_states/ folders are in tmp_path."""
    torch.manual_seed(0)
    opt = train_options('unit', SHARED)
    opt.update({'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1, 'auto_resume': False})
    for key in ('models', 'training_states'):
        opt['path'][key] = str(tmp_path / key)
        (tmp_path / key).mkdir()
    return build_model(opt)


def tiny_net_file(path, spoil=None):
    """TINY_NET's seeded weights as .safetensors, with `spoil(state)` applied first."""
    torch.manual_seed(1)
    state = CiaoSR(**{k: v for k, v in TINY_NET.items() if k != 'type'}).state_dict()
    if spoil:
        spoil(state)
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


def test_pretrained_weights_are_checked(model, tmp_path):
    def integer(state):
        state['conv_first.weight'] = state['conv_first.weight'].to(torch.int8)
    path = tiny_net_file(tmp_path / 'int.SAFETENSORS', integer)
    with pytest.raises(CheckpointError, match=r'int.SAFETENSORS: unusable tensors: conv_first.weight is int8'):
        model.load_network(model.net_g, str(path))
    path = tiny_net_file(tmp_path / 'good.Safetensors')
    model.load_network(model.net_g, str(path))
    assert torch.equal(model.net_g.state_dict()['conv_first.weight'], read_checkpoint(path)[0]['conv_first.weight'])


def test_pretrain_network_g_takes_shipped_names_and_says_what_a_loose_load_left_out(model, tmp_path,
                                                                                      basicsr_warnings):
    """A shipped model's name is read as its file (the error offered the names, and then refused them); with
    strict_load_g: false a file that gives few of the tensors is said so (it trained on silently)."""
    with pytest.raises(CheckpointError, match=r'ciaosr_edsr_baseline\.safetensors does not match CiaoSR: .*shapes'):
        model.load_network(model.net_g, 'default', strict=False)  # the full-size default into the tiny net
    def partial(state):
        state['extra.weight'] = torch.zeros(1)
        for key in [k for k in state if k.startswith('imnet_q.')]:
            del state[key]
    path = tiny_net_file(tmp_path / 'partial.safetensors', partial)
    model.load_network(model.net_g, str(path), strict=False)
    total = len(model.net_g.state_dict())
    missing = sum(k.startswith('imnet_q.') for k in model.net_g.state_dict())
    assert [m for m in basicsr_warnings if 'strict_load' in m] == [
        f'{path} gave {total - missing} of the {total} tensors of CiaoSR (loaded with strict_load_* false); not in the '
        'file: imnet_q.layers.0.weight, imnet_q.layers.0.bias, imnet_q.layers.2.weight, imnet_q.layers.2.bias; in the '
        'file but not in the network: extra.weight']
    # The EMA net, loaded from the same file, takes what the file lacks from the generator (a review: it kept an init
    # of its own, which a decay of 0.99 still held at 0.99 ** 100 = 37 % after 100 iterations).
    for param in model.net_g_ema.imnet_q.parameters():  # as BasicSR builds it: an init of its own
        torch.nn.init.normal_(param)
    model.load_network(model.net_g_ema, str(path), strict=False, param_key='params_ema')
    ema, generator = model.net_g_ema.state_dict(), model.net_g.state_dict()
    assert all(torch.equal(ema[k], generator[k]) for k in generator)


def test_nan_pretrained_weights_stop_train_py_in_one_line(experiment):
    name, val, tmp_path = experiment
    opt = train_options(name, val)
    del opt['datasets']['val_2']

    def nan(state):
        state['imnet_v.layers.0.bias'][3] = float('nan')
    opt['path']['pretrain_network_g'] = str(tiny_net_file(tmp_path / 'nan.safetensors', nan))
    log, output = run_train(opt, tmp_path, status=1)
    message = 'nan.safetensors: unusable tensors: imnet_v.layers.0.bias has non-finite values (1 NaN of 16)'
    assert message in output and message in log and 'Traceback' not in output


def test_non_finite_loss_stops_before_the_step(model):
    data = ArbitraryScaleSRDataset(model.opt['datasets']['train'])
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    batch['gt'][0, 5] = float('nan')
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    model.feed_data(batch)
    with pytest.raises(TrainingDiverged, match=r'^iteration 7: non-finite loss \(l_pix = nan\); training stopped'):
        model.optimize_parameters(7)
    assert all(torch.equal(v, before[k]) for k, v in model.net_g.state_dict().items())


def test_saves_are_atomic_and_auto_resume_skips_unusable_states(model, tmp_path, capsys, monkeypatch):
    for it in (2, 4, 6):
        model.save(0, it)
    models, states = tmp_path / 'models', tmp_path / 'training_states'
    assert sorted(p.name for p in states.iterdir()) == ['2.state', '4.state', '6.state']
    assert sorted(p.name for p in models.iterdir()) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_6.pth']
    saved = torch.load(models / 'net_g_4.pth', weights_only=True)
    assert set(saved) == {'params', 'params_ema'}
    model.load_network(model.net_g, str(models / 'net_g_4.pth'), param_key='params_ema')  # as pretrain_network_g
    assert all(torch.equal(v, saved['params_ema'][k]) for k, v in model.net_g.state_dict().items())

    # A failing save (disk full, a kill) leaves the previous complete file and no temporary file.
    def failing_save(obj, file):
        file.write(b'half a checkpoint')
        raise OSError(28, 'No space left on device')
    good = (states / '6.state').read_bytes()
    monkeypatch.setattr(torch, 'save', failing_save)
    monkeypatch.setattr('ciaosr_arch.models.ciaosr_model.time.sleep', lambda seconds: None)
    with pytest.raises(OSError, match='cannot save .*6.state: .*No space left on device'):
        model.save_training_state(0, 6)
    monkeypatch.undo()
    assert (states / '6.state').read_bytes() == good and not list(tmp_path.rglob('*.part'))

    (states / '6.state').write_bytes(b'')  # empty
    (states / '4.state').write_bytes(good[:len(good) // 2])  # truncated
    model.save_training_state(0, 8)  # complete, but its network file is missing
    opt = dict(model.opt, auto_resume=True)
    opt['path'] = dict(opt['path'], resume_state=None, pretrain_network_g=None)
    state = load_resume_state(opt)
    assert state['iter'] == 2 and opt['path']['resume_state'] == str(states / '2.state')
    assert opt['path']['pretrain_network_g'] == str(models / 'net_g_2.pth')
    printed = capsys.readouterr().out
    for name, reason in (('8.state', 'its network files are missing (net_g_8.pth)'),
                         ('6.state', 'not a readable training state'), ('4.state', 'not a readable training state')):
        assert f'auto_resume: skipping {states / name}: {reason}' in printed, printed

    (states / '2.state').unlink()
    opt['path']['resume_state'] = None
    with pytest.raises(CheckpointError, match=f'--auto_resume: no usable training state in {states}'):
        load_resume_state(opt)
