"""Shared test fixtures. Tests read data from ../shared (next to the checkout, also on CI)."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / 'shared'
sys.path.insert(0, str(ROOT))  # the plugin is used from the checkout, never installed

import ciaosr_arch  # noqa: E402,F401  (registers archs/datasets/models; applies the basicsr fix)

torch.set_num_threads(2)


@pytest.fixture(scope='session')
def golden():
    """Outputs of the official CiaoSR (EDSR-baseline) generator for fixed weights (spec section 7)."""
    return torch.load(SHARED / 'fixtures' / 'ciaosr_edsr_official_golden.pt', weights_only=True)


@pytest.fixture(scope='session')
def shared_data():
    return SHARED / 'data'
