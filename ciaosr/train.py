"""BasicSR's train and test pipelines with this project's archs, datasets and models registered.

    ciaosr-train -opt options/NAME.yml [--auto_resume]        (= python ciaosr_arch/train.py ...)
    ciaosr-test -opt options/NAME.yml                         (= python ciaosr_arch/test.py ...)
    torchrun --nproc_per_node=N -m ciaosr.train -opt ... --launcher pytorch

Experiments and results go under the working directory (experiments/, results/), as when BasicSR is run
from its checkout. Options files are read as plain YAML data and checked (`ciaosr_arch.options`): a file that
cannot be read, a `!!python` tag, an unknown option or a value of the wrong kind stops the run before anything is
created, with one `error: ...` line and exit status 2. A checkpoint that cannot be used (pretrain_network_g, a
resume state), data that cannot be used (a missing folder, files that are not images, images too small) or a
NaN/Inf loss stops the run with one line (`ERROR: ...` in the log's format once the log exists, else `error: ...`)
and exit status 1.
"""
import os
import sys

import torch.distributed as dist

import realsr  # noqa: F401  (registers the real-world dataset and models; imports and registers ciaosr_arch)
from ciaosr_arch import CheckpointError
from ciaosr_arch.compat import make_basicsr_trainer_device_agnostic
from ciaosr_arch.errors import DataError
from ciaosr_arch.models.ciaosr_model import TrainingDiverged
from ciaosr_arch.options import OptionsError, use_safe_options


def _run(pipeline, argv):
    """Run a BasicSR pipeline from the working directory with `argv` (default: sys.argv[1:]).

    Options that cannot be used (OptionsError) end the process with one line `error: ...` on stderr and exit
    status 2. A checkpoint that cannot be used (CheckpointError: also missing VGG weights of the perceptual loss),
    data that cannot be used (DataError: a missing folder, files that are not images, images too small) or a
    NaN/Inf loss (TrainingDiverged) ends the process with one line and exit status 1: `ERROR: ...` through the run's
    logger (console and log file) once that exists, else `error: ...` on stderr; no traceback.
    """
    from basicsr.utils.logger import get_root_logger, initialized_logger  # after ciaosr_arch's basicsr fix

    if argv is not None:  # BasicSR parses sys.argv itself
        sys.argv = [sys.argv[0], *argv]
    make_basicsr_trainer_device_agnostic()
    use_safe_options()
    try:
        pipeline(os.getcwd())
    except OptionsError as err:  # found before anything is created
        print(f'error: {err}', file=sys.stderr)
        sys.exit(2)
    except (CheckpointError, DataError, TrainingDiverged) as err:
        message = str(err)
        if message.startswith('Caught '):  # re-raised by a DataLoader from its worker: the worker's traceback, then
            message = message.rstrip().splitlines()[-1].split(': ', 1)[-1]  # 'module.Class: message' last
        if 'basicsr' in initialized_logger:
            get_root_logger().error(message)
            sys.exit(1)
        sys.exit(f'error: {message}')


def train(argv=None):
    """`basicsr.train.train_pipeline` (BasicSR's command line: -opt FILE, --auto_resume, --launcher, --force_yml)."""
    from basicsr.train import train_pipeline
    _run(train_pipeline, argv)
    if dist.is_initialized():  # ranks leave together; exiting with a live gloo group can abort the process
        dist.barrier()
        dist.destroy_process_group()


def test(argv=None):
    """`basicsr.test.test_pipeline` (BasicSR's command line: -opt FILE)."""
    from basicsr.test import test_pipeline
    _run(test_pipeline, argv)


if __name__ == '__main__':
    train()
