"""Options files of ciaosr-train / ciaosr-test (ciaosr_arch/options.py): plain YAML data only, --force_yml values
without eval, misspelt options and values of the wrong kind refused in one line naming the nearest known option;
every shipped options file still loads and passes the checks."""
import copy
import logging
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ciaosr import train as train_cli
from ciaosr_arch.options import OptionsError, OptionsLoader, check_options, parse_value

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / 'shared'
BASE = {
    'name': 'x', 'model_type': 'CiaoSRModel', 'num_gpu': 0, 'manual_seed': 0,
    'datasets': {'train': {'name': 'T91', 'type': 'ArbitraryScaleSRDataset',
                           'gt_folders': [str(SHARED / 'data/train/T91')], 'lq_size': 16, 'sample_q': 64,
                           'batch_size_per_gpu': 2, 'num_worker_per_gpu': 0, 'dataset_enlarge_ratio': 1}},
    'network_g': {'type': 'CiaoSR', 'encoder': 'edsr_baseline', 'encoder_opt': {'num_feat': 8, 'num_block': 1},
                  'decoder_hidden': [16], 'key_hidden': [16], 'value_hidden': [16]},
    'path': {'pretrain_network_g': None, 'resume_state': None},
    'train': {'ema_decay': 0.9, 'optim_g': {'type': 'Adam', 'lr': 0.001}, 'total_iter': 1, 'warmup_iter': -1,
              'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
              'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
    'logger': {'print_freq': 1, 'save_checkpoint_freq': 1, 'use_tb_logger': False, 'wandb': {'project': None}},
}


def run_train(tmp_path, monkeypatch, text, *extra, entry='train'):
    """Exit status of ciaosr-train (or ciaosr-test: `entry` 'test') -opt FILE with `text`, run in tmp_path."""
    (tmp_path / 'opt.yml').write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        getattr(train_cli, entry)(['-opt', 'opt.yml', *extra])
    return stop.value.code


@pytest.mark.parametrize('shipped', sorted(p.name for p in (ROOT / 'options').glob('*.yml')))
def test_every_shipped_options_file_loads_and_passes_the_checks(shipped):
    text = (ROOT / 'options' / shipped).read_text()
    opt = yaml.load(text, Loader=OptionsLoader)
    assert isinstance(opt, OrderedDict) and opt == yaml.safe_load(text)
    check_options(opt)


@pytest.mark.parametrize('entry', ['train', 'test'])
def test_python_tags_are_refused_before_anything_runs(tmp_path, monkeypatch, capsys, entry):
    text = yaml.safe_dump(BASE).replace('name: x', "name: !!python/object/apply:os.system ['echo ran > ran.txt']")
    assert run_train(tmp_path, monkeypatch, text, entry=entry) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: could not determine a constructor for the tag')
    assert 'opt.yml", line' in err[0] and 'plain YAML data only' in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['opt.yml']  # nothing ran, nothing was created


def test_force_yml_values_are_parsed_not_evaluated(tmp_path, monkeypatch, capsys):
    assert [parse_value(v) for v in ('~', 'None', 'true', '5', '0.5', '!!float 1e-3', '[1, 2]', 'abc')] == [
        None, None, True, 5, 0.5, 1e-3, [1, 2], 'abc']
    with pytest.raises(OptionsError, match='--force_yml value'):
        parse_value("!!python/object/apply:os.system ['echo ran > ran.txt']")
    code = "[__import__('os').system('echo ran > ran.txt')]"
    assert run_train(tmp_path, monkeypatch, yaml.safe_dump(BASE), '--force_yml', f'train:ema_decay={code}') == 2
    assert 'error: train.ema_decay: expected a number' in capsys.readouterr().err
    assert not (tmp_path / 'ran.txt').exists()
    tag = "name=!!python/object/apply:os.system ['echo ran > ran.txt']"
    assert run_train(tmp_path, monkeypatch, yaml.safe_dump(BASE), '--force_yml', tag) == 2
    assert capsys.readouterr().err.startswith('error: --force_yml value')  # its own message, not a wrapped one
    assert not (tmp_path / 'ran.txt').exists()


@pytest.mark.parametrize('section, key, typo, message', [
    (('datasets', 'train'), 'lq_size', 'lq_szie', "datasets.train: unknown option 'lq_szie' (did you mean 'lq_size'?)"),
    (('train',), 'ema_decay', 'ema_decya', "train: unknown option 'ema_decya' (did you mean 'ema_decay'?)"),
    (('train',), 'total_iter', 'total_iters', "train: unknown option 'total_iters' (did you mean 'total_iter'?)"),
    (('network_g',), 'encoder_opt', 'encoder_opts',
     "network_g: unknown option 'encoder_opts' (did you mean 'encoder_opt'?)"),
    ((), 'model_type', 'model_type', "model_type: unknown type 'CiaoSRModle' (did you mean 'CiaoSRModel'?)"),
])
def test_misspelt_options_name_the_nearest_known_one(section, key, typo, message):
    opt = copy.deepcopy(BASE)
    node = opt
    for name in section:
        node = node[name]
    node[typo] = node.pop(key) if typo != key else 'CiaoSRModle'
    with pytest.raises(OptionsError) as err:
        check_options(opt)
    assert str(err.value) == message


def test_values_of_the_wrong_kind_are_named():
    opt = yaml.load(yaml.safe_dump(BASE).replace('lr: 0.001', 'lr: 1e-3'), Loader=OptionsLoader)
    with pytest.raises(OptionsError, match=r"train\.optim_g\.lr: expected a number, got '1e-3' \(YAML 1\.1 reads"):
        check_options(opt)
    opt['train']['optim_g']['lr'] = 1e-3
    opt['datasets']['train']['use_rot'] = 'no'
    with pytest.raises(OptionsError, match="datasets.train.use_rot: expected true or false, got 'no'"):
        check_options(opt)
    opt['datasets']['train']['use_rot'] = True
    opt['datasets']['train']['lq_size'] = True
    with pytest.raises(OptionsError, match='datasets.train.lq_size: expected a whole number, got True'):
        check_options(opt)
    opt['datasets']['train']['lq_size'] = 16
    opt['train']['autocast'] = 'fp16'
    with pytest.raises(OptionsError, match="train.autocast: expected one of 'bf16', got 'fp16'"):
        check_options(opt)
    del opt['train']['autocast']
    check_options(opt)  # BasicSR's own keys (path, logger, optimiser arguments) pass


def test_values_that_cannot_work_together_and_encoder_options_are_named():
    """Caught before anything is created (they were a collate error mid-training, an OpenCV error, or no error)."""
    for change, message in [
            ({'lq_size': 0}, 'datasets.train.lq_size: must be at least 1, got 0'),
            ({'scale_min': 5, 'scale_max': 4}, 'datasets.train: scale_min and scale_max must have 1 <= scale_min <= '
                                               'scale_max, got 5 and 4'),
            ({'sample_q': 100000}, 'datasets.train.sample_q: 100000 is more than the 256 GT pixels of the smallest '
                                   'crop (round(lq_size x scale_min) squared); lower it or raise lq_size')]:
        opt = copy.deepcopy(BASE)
        opt['datasets']['train'].update(change)
        with pytest.raises(OptionsError) as err:
            check_options(opt)
        assert str(err.value) == message
    opt = copy.deepcopy(BASE)
    opt['network_g']['encoder_opt']['num_blok'] = 16
    with pytest.raises(OptionsError, match=r"^network_g.encoder_opt: unknown option 'num_blok' \(did you mean "
                                           r"'num_block'\?\)$"):
        check_options(opt)
    opt['network_g']['encoder'] = 'edsr'
    with pytest.raises(OptionsError, match=r"^network_g.encoder: unknown encoder 'edsr' \(known: edsr_baseline, rdn"):
        check_options(opt)


def test_keys_the_training_loop_needs_are_named_before_training():
    """A training run without train.total_iter, logger.print_freq or .save_checkpoint_freq, or with a val: section
    without val_freq, was a KeyError from BasicSR's loop after the first iterations; a test run needs none of them."""
    for section, key in (('train', 'total_iter'), ('logger', 'print_freq'), ('logger', 'save_checkpoint_freq'),
                         ('val', 'val_freq')):
        opt = {**copy.deepcopy(BASE), 'is_train': True, 'val': {'val_freq': 10}}
        del opt[section][key]
        message = rf"^{section}\.{key}: missing \(.*\); BasicSR's training loop reads it$"
        with pytest.raises(OptionsError, match=message):
            check_options(opt)
        check_options({**opt, 'is_train': False})
    check_options({**copy.deepcopy(BASE), 'is_train': True})  # no val: section, no val_freq needed


@pytest.mark.parametrize('text, extra', [
    ('', []),  # an empty file
    ('- a list\n', []),
    ('name: x\nmodel_type: CiaoSRModel\n', []),  # no num_gpu, no sections BasicSR needs
    (None, ['--force_yml', 'train:total_iter']),  # no '='
    (None, ['--force_yml', 'nosuch:key=3']),  # a section that is not there
])
def test_options_basicsr_cannot_read_are_one_line(tmp_path, monkeypatch, capsys, text, extra):
    text = yaml.safe_dump(BASE) if text is None else text
    assert run_train(tmp_path, monkeypatch, text, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: BasicSR cannot read these options ('), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['opt.yml']


@pytest.fixture
def fresh_basicsr_logger(monkeypatch):
    """BasicSR's logger as in a new process (it is set up once per process, writing to the stream and log file of
    the first pipeline run in it), and as it was after the test."""
    from basicsr.utils.logger import initialized_logger
    logger = logging.getLogger('basicsr')
    monkeypatch.setattr(logger, 'handlers', [])
    monkeypatch.delitem(initialized_logger, 'basicsr', raising=False)


def test_the_test_pipeline_runs_with_the_val_keys_basicsr_wants(tmp_path, monkeypatch, fresh_basicsr_logger):
    """A val section with metrics only, or none: BasicSR read val.save_img and val.suffix (KeyError)."""
    opt = {k: v for k, v in BASE.items() if k != 'train'}
    opt['datasets'] = {'test_1': {'name': 'Set5', 'type': 'SRBenchmarkDataset', 'scale': 2,
                                  'dataroot_gt': str(tmp_path / 'set5')}}  # two of its images, cropped
    (tmp_path / 'set5').mkdir()
    for name in ('baby', 'bird'):
        image = cv2.imread(str(SHARED / 'data/Set5' / f'{name}.png'))
        cv2.imwrite(str(tmp_path / 'set5' / f'{name}.png'), image[:40, :44])
    monkeypatch.chdir(tmp_path)
    for val in ({'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 'scale', 'test_y_channel': True}}},
                None):
        (tmp_path / 'opt.yml').write_text(yaml.safe_dump({**opt, 'val': val}))
        train_cli.test(['-opt', 'opt.yml'])
        assert sorted(p.name for p in (tmp_path / 'results' / 'x' / 'visualization' / 'Set5').iterdir()) == [
            'baby_x.png', 'bird_x.png']


def test_test_data_that_cannot_be_used_stops_in_one_line(tmp_path, monkeypatch, capfd, fresh_basicsr_logger):
    """A review: a test scale of 0 or below gave a traceback (ZeroDivisionError) and 0.5 ran; an image too small for
    the scale gave a ValueError's traceback: now one line, exit 2 for the options, 1 for the data, naming the file."""
    opt = {k: v for k, v in BASE.items() if k != 'train'}
    (tmp_path / 'set').mkdir()
    cv2.imwrite(str(tmp_path / 'set' / 'tiny.png'), np.zeros((3, 3, 3), np.uint8))
    for scale, status, message in ((0, 2, 'error: datasets.test_1.scale: must be a finite number >= 1 (the HR images '
                                          'are down-sized by it), got 0'),
                                   (0.5, 2, 'got 0.5'),
                                   (4, 1, f'ERROR: {tmp_path / "set" / "tiny.png"}: HR image 3x3 is too small for '
                                          'scale 4')):
        opt['datasets'] = {'test_1': {'name': 'set', 'type': 'SRBenchmarkDataset', 'scale': scale,
                                      'dataroot_gt': str(tmp_path / 'set')}}
        capfd.readouterr()
        assert run_train(tmp_path, monkeypatch, yaml.safe_dump({**opt, 'val': None}), entry='test') == status
        err = capfd.readouterr().err
        assert message in err and 'Traceback' not in err, err


def test_more_gpus_than_the_machine_has_stop_in_one_line(tmp_path, monkeypatch, capfd, fresh_basicsr_logger):
    """A review: num_gpu: 1 without CUDA ended in BasicSR's 'Found no NVIDIA driver' traceback, exit 1."""
    import torch
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    for gpus in (1, 'two'):
        assert run_train(tmp_path, monkeypatch, yaml.safe_dump({**BASE, 'num_gpu': gpus})) == 2
        assert capfd.readouterr().err == (f'error: num_gpu: {gpus!r} cannot run here: 0 CUDA GPUs visible (num_gpu: 0 '
                                          'runs on the CPU, auto on what there is)\n')


def test_a_missing_data_folder_stops_training_in_one_line(tmp_path, monkeypatch, capfd, fresh_basicsr_logger):
    """README's DIV2K command without DIV2K was a traceback (FileNotFoundError); now one line and exit status 1."""
    opt = copy.deepcopy(BASE)
    opt['datasets']['train']['gt_folders'] = [str(tmp_path / 'DIV2K_train_HR')]
    assert run_train(tmp_path, monkeypatch, yaml.safe_dump(opt)) == 1
    err = capfd.readouterr().err
    assert f'ERROR: {tmp_path / "DIV2K_train_HR"}: no such folder of images (dataroot_gt / gt_folders)' in err
    assert 'Traceback' not in err
