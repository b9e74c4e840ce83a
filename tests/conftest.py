"""Shared test fixtures. Tests read data from ../shared (next to the checkout, also on CI)."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / 'shared'

import ciaosr_arch  # noqa: E402,F401  (registers archs/datasets/models; applies the basicsr fix)
from ciaosr_arch import CiaoSR  # noqa: E402
from ciaosr_arch.files import save_safetensors  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope='session', autouse=True)
def graph_cache(tmp_path_factory):
    """The OpenVINO graphs that tests convert go to a temporary folder, not the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('CIAOSR_CACHE_DIR', str(tmp_path_factory.mktemp('cache')))
        yield


@pytest.fixture(scope='session')
def golden():
    """Outputs of the official CiaoSR (EDSR-baseline) generator for fixed weights."""
    return torch.load(SHARED / 'fixtures' / 'ciaosr_edsr_official_golden.pt', weights_only=True)


@pytest.fixture(scope='session')
def shared_data():
    return SHARED / 'data'


TINY_ARCH = {'type': 'CiaoSR', 'encoder': 'edsr_baseline', 'encoder_opt': {'num_feat': 16, 'num_block': 1},
             'decoder_hidden': [32], 'key_hidden': [32], 'value_hidden': [32]}


@pytest.fixture(scope='session')
def tiny_model(tmp_path_factory):
    """A .safetensors file of a tiny CiaoSR (16-channel 1-block encoder, 32-wide MLPs), seeded random weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('model') / 'tiny.safetensors'
    save_safetensors(CiaoSR(**{k: v for k, v in TINY_ARCH.items() if k != 'type'}), path, TINY_ARCH)
    return path


@pytest.fixture(scope='session')
def stressed_weights(golden):
    """The golden fixture's weights under its stress rule (imnet_*/cs_attn.* weights doubled): its outputs are
    theirs."""
    return {k: v * 2 if k.startswith(('imnet_', 'cs_attn.')) and k.endswith('weight') else v
            for k, v in golden['state_dict'].items()}


@pytest.fixture(scope='session')
def photo(shared_data):
    """A natural 8-bit RGB photo [H, W, 3] to cut small inputs from."""
    return np.asarray(Image.open(shared_data / 'RealSRSet' / 'dped_crop00061.png').convert('RGB'))


@pytest.fixture(scope='session')
def psnr():
    """PSNR (dB) of two images in [0, 1] (arrays or tensors of one shape): psnr(a, b)."""
    return lambda a, b: 10 * math.log10(1 / float(((a - b) ** 2).mean()))
