"""Evaluate with BasicSR's test pipeline: python ciaosr_arch/test.py -opt options/NAME.yml
Unusable weights (`path.pretrain_network_g`) stop it with one `error: ...` line and exit status 1."""
import sys
from os import path as osp

ROOT = osp.abspath(osp.join(__file__, osp.pardir, osp.pardir))
sys.path[0] = ROOT  # the repo root, not ciaosr_arch/ (whose module names would shadow others)

import ciaosr_arch  # noqa: E402,F401  (registers archs, datasets, models)
import realsr  # noqa: E402,F401  (registers the real-world degradation model and dataset)
from ciaosr_arch.compat import make_basicsr_trainer_device_agnostic, run_pipeline  # noqa: E402

if __name__ == '__main__':
    make_basicsr_trainer_device_agnostic()
    from basicsr.test import test_pipeline
    run_pipeline(test_pipeline, ROOT)
