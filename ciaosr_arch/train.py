"""Train with BasicSR's trainer: python ciaosr_arch/train.py -opt options/NAME.yml [--auto_resume]
Multi-GPU / multi-process: torchrun --nproc_per_node=N ciaosr_arch/train.py -opt ... --launcher pytorch

A checkpoint that cannot be used (pretrain_network_g, a resume state) or a NaN/Inf loss stops training with
one `error: ...` line (also in the training log once that exists) and exit status 1 (`compat.run_pipeline`).
"""
import sys
from os import path as osp

ROOT = osp.abspath(osp.join(__file__, osp.pardir, osp.pardir))
sys.path[0] = ROOT  # the repo root, not ciaosr_arch/ (whose module names would shadow others)

import torch.distributed as dist  # noqa: E402

import ciaosr_arch  # noqa: E402,F401  (registers archs, datasets, models)
import realsr  # noqa: E402,F401  (registers the real-world degradation model and dataset)
from ciaosr_arch.compat import make_basicsr_trainer_device_agnostic, run_pipeline  # noqa: E402

if __name__ == '__main__':
    make_basicsr_trainer_device_agnostic()
    from basicsr.train import train_pipeline
    run_pipeline(train_pipeline, ROOT)
    if dist.is_initialized():  # ranks leave together; exiting with a live gloo group can abort the process
        dist.barrier()
        dist.destroy_process_group()
