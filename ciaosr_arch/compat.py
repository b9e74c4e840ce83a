"""The fixes this project applies to basicsr 1.4.2; imported before basicsr.

1. On import: basicsr imports `torchvision.transforms.functional_tensor`, a module that torchvision
   0.17 renamed to `_functional_tensor`. Aliasing the old name lets basicsr (and realesrgan, which
   imports basicsr) import unchanged.
2. to 4. For its train/test pipelines (`make_basicsr_trainer_device_agnostic`): resuming from a
   training state (`load_resume_state`) and the `--launcher pytorch` set-up, on any device, a resumed
   run that goes on with new data (`ContinuedSampler`, `reseed_for_resume`) instead of the batches it had, and data
   loader workers that draw anew each epoch (`seed_worker`).

Nothing in site-packages is edited.
"""
import datetime
import functools
import os
import sys

from .errors import CheckpointError, error_line
from .options import OptionsError

DIST_TIMEOUT = datetime.timedelta(hours=2)  # how long a training rank waits for the others in a collective

try:
    import torchvision.transforms.functional_tensor  # noqa: F401  # pyright: ignore[reportMissingImports]  (torchvision < 0.17)
except ImportError:
    import torchvision.transforms._functional_tensor as _functional_tensor

    sys.modules['torchvision.transforms.functional_tensor'] = _functional_tensor


def seed_worker(worker_id, num_workers, rank, seed):
    """BasicSR's data loader's `worker_init_fn`, redone: a worker seeds Python's and NumPy's generators (what the
    datasets draw scales, crops, flips and kernels with) from PyTorch's seed of the worker, which the loader draws
    anew each epoch from the trainer's seeded generator (seed + rank). BasicSR's seeds them with seed + rank and
    worker number, the same every epoch, and the workers start anew each epoch: every epoch drew the same samples (a
    review). The arguments are BasicSR's, unused: PyTorch's seed already depends on them."""
    import random

    import numpy as np
    import torch

    worker_seed = torch.initial_seed() % 2 ** 32
    random.seed(worker_seed)
    np.random.seed(worker_seed)


def read_training_state(path, device):
    """The training state BasicSR saved at `path` ({'epoch', 'iter', 'optimizers', 'schedulers'}), tensors on
    `device`, read with weights_only=True. Raises CheckpointError naming the file if it is empty, truncated,
    unreadable or not such a state."""
    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # empty, truncated, random bytes, pickled code: all unusable
        raise CheckpointError(f'{path}: not a readable training state ({error_line(err, named=True)})') from None
    if not (isinstance(state, dict) and isinstance(state.get('iter'), int) and isinstance(state.get('epoch'), int)
            and isinstance(state.get('optimizers'), list) and isinstance(state.get('schedulers'), list)):
        raise CheckpointError(f'{path}: not a BasicSR training state (epoch, iter, optimizers, schedulers)')
    return state


def load_resume_state(opt):
    """BasicSR's load_resume_state, on any device and robust to a save that was cut short.

    `path.resume_state` is read as given (CheckpointError if unusable). With `--auto_resume`, the states
    `experiments/NAME/training_states/N.state` are tried from the highest N down: a state that is empty,
    truncated or unreadable, or whose network files `models/net_*_N.pth` are missing, is skipped with a
    printed line naming it (the logger does not exist yet at this point), and training resumes from the
    newest usable one. CheckpointError if states exist but none is usable (BasicSR would otherwise start
    over and archive the experiment). Returns the state dict, or None to start from scratch.
    """
    import torch
    from basicsr.utils import check_resume

    device = torch.device('cuda', torch.cuda.current_device()) if opt['num_gpu'] else torch.device('cpu')
    state_dir = opt['path']['training_states']
    if opt['auto_resume'] and os.path.isdir(state_dir):
        names = [name for name in os.listdir(state_dir) if name.endswith('.state') and name[:-6].isdigit()]
        ignored = opt['path'].get('ignore_resume_networks') or []
        networks = [key.removeprefix('network_') for key in opt if key.startswith('network_') and key not in ignored]
        skipped = []
        for name in sorted(names, key=lambda name: int(name[:-6]), reverse=True):
            path = os.path.join(state_dir, name)
            try:
                state = read_training_state(path, device)
                missing = [f'net_{net}_{state["iter"]}.pth' for net in networks if not os.path.isfile(
                    os.path.join(opt['path']['models'], f'net_{net}_{state["iter"]}.pth'))]
                if missing:
                    raise CheckpointError(f'{path}: its network files are missing ({", ".join(missing)})')
            except CheckpointError as err:
                skipped.append(str(err))
                if opt['rank'] == 0:
                    print(f'auto_resume: skipping {err}', flush=True)
                continue
            opt['path']['resume_state'] = path
            check_resume(opt, state['iter'])
            return state
        if skipped:
            raise CheckpointError(f'--auto_resume: no usable training state in {state_dir}: ' + '; '.join(skipped))
    path = opt['path'].get('resume_state')
    if not path:
        return None
    state = read_training_state(path, device)
    check_resume(opt, state['iter'])
    return state


def reseed_for_resume(opt, iteration):
    """Seeds the random generators of a run resumed at `iteration` with opt['manual_seed'] + iteration (also what
    BasicSR's dataloader seeds its workers with: opt['manual_seed'] is set to it), plus the rank, as BasicSR does at
    the start. BasicSR seeds a resumed run as it seeded the first one, so its crops, scales and degradations would
    repeat those of the first iterations. Returns the new seed."""
    from basicsr.utils import set_random_seed

    opt['manual_seed'] = opt['manual_seed'] + iteration
    set_random_seed(opt['manual_seed'] + opt['rank'])
    return opt['manual_seed']


def samples_used(iteration, epoch, batches_per_epoch, batch_size):
    """Samples of epoch `epoch` that this rank's loader had given (`batch_size` each: its own, the GPUs' together
    under DataParallel) when the run stopped after `iteration` iterations, with `batches_per_epoch` batches in every
    epoch (BasicSR's training loader drops the last, partial batch, and every epoch runs to the end)."""
    return (iteration - epoch * batches_per_epoch) * batch_size


def continued_sampler_class():
    """`ContinuedSampler`: BasicSR's EnlargedSampler that can start an epoch part-way (`continue_at`), as a run
    resumed in the middle of an epoch must. BasicSR's own order of an epoch depends on the epoch alone and a resumed
    run starts it from its first sample, so a run resumed before the end of an epoch (with `dataset_enlarge_ratio:
    100`, the whole of a typical run is one epoch) trained again on the samples it had already had."""
    from basicsr.data.data_sampler import EnlargedSampler

    class ContinuedSampler(EnlargedSampler):
        resume: tuple[int, int] | None = None  # (epoch, samples of it already used by this rank)

        def continue_at(self, epoch, used):
            """Start epoch `epoch` after its first `used` samples (of this rank's share) when it comes."""
            self.resume = (epoch, used)

        def __iter__(self):
            indices = list(super().__iter__())
            if self.resume is not None and self.resume[0] == self.epoch:
                indices = indices[self.resume[1]:]
            return iter(indices)

    return ContinuedSampler


def make_basicsr_trainer_device_agnostic():
    """Let basicsr 1.4.2's train/test pipelines run on CPU and under torchrun (called by train.py/test.py).

    - resume: basicsr maps the resume state to `torch.cuda.current_device()`, which fails without
      a GPU, and trusts the newest state file; ours is `load_resume_state` (the run's device,
      weights_only=True, truncated or empty states skipped).
    - `--launcher pytorch`: basicsr always uses NCCL and `torch.cuda.set_device`; ours picks gloo
      without CUDA (one process per CPU "rank"), and with CUDA one GPU per local rank (more ranks than GPUs: an
      OptionsError), NCCL for CUDA tensors and gloo for CPU ones; collectives wait up to DIST_TIMEOUT (NCCL's default,
      10 minutes, ended runs whose validation, on rank 0 alone, took longer).
    - a resumed run: new random seeds (`reseed_for_resume`), and the epoch it stopped in goes on from the sample
      after the last one used (`continued_sampler_class`), said in the log.
    """
    import basicsr.data
    import basicsr.train
    import basicsr.utils.options
    import torch
    import torch.distributed as dist

    resumed = {}  # the state a run resumes from: its epoch and iteration
    create_train_val_dataloader = basicsr.train.create_train_val_dataloader
    create_train_val_dataloader = getattr(create_train_val_dataloader, '__wrapped__', create_train_val_dataloader)
    sampler_class = continued_sampler_class()

    def resume_state(opt):
        state = load_resume_state(opt)
        if state is not None:
            resumed.update(epoch=state['epoch'], iter=state['iter'], seed=reseed_for_resume(opt, state['iter']))
        return state

    @functools.wraps(create_train_val_dataloader)
    def dataloaders(opt, logger):
        result = create_train_val_dataloader(opt, logger)
        train_loader, train_sampler = result[:2]
        if resumed and isinstance(train_sampler, sampler_class) and train_loader is not None:
            used = samples_used(resumed['iter'], resumed['epoch'], len(train_loader), train_loader.batch_size)
            train_sampler.continue_at(resumed['epoch'], min(max(used, 0), len(train_sampler)))
            logger.info(f'Resumed at iteration {resumed["iter"]}: epoch {resumed["epoch"]} goes on from sample {used} '
                        f'of this rank\'s {len(train_sampler)}; random seed {resumed["seed"]}.')
            if not 0 <= used <= len(train_sampler):  # batch size, data or ranks changed since the state was saved
                logger.warning(f'The resumed epoch does not fit the data as they are now (sample {used} of '
                               f'{len(train_sampler)}): it goes on from the {"start" if used < 0 else "next epoch"}.')
        return result

    def init_dist(launcher, backend=None, **kwargs):
        if launcher != 'pytorch':
            raise OptionsError(f'--launcher: only pytorch (torchrun) is supported, got {launcher!r}')
        if torch.cuda.is_available():
            local_rank, gpus = int(os.environ.get('LOCAL_RANK', 0)), torch.cuda.device_count()
            if local_rank >= gpus:
                raise OptionsError(f'--launcher pytorch: local rank {local_rank} has no GPU of its own ({gpus} '
                                   f'visible): start at most {gpus} processes per machine (torchrun --nproc_per_node)')
            torch.cuda.set_device(local_rank)
        try:  # gloo for CPU tensors too (num_gpu: 0 on a GPU machine); rank 0 validates while the others wait
            dist.init_process_group(backend='cpu:gloo,cuda:nccl' if torch.cuda.is_available() else 'gloo',
                                    timeout=DIST_TIMEOUT, **kwargs)
        except (ValueError, RuntimeError) as err:  # no torchrun environment (RANK, MASTER_ADDR, ...), or no peers
            raise OptionsError(f'--launcher pytorch: cannot join the process group ({error_line(err)}); '
                               'start the run with torchrun') from None

    basicsr.data.worker_init_fn = seed_worker
    basicsr.train.load_resume_state = resume_state
    basicsr.train.create_train_val_dataloader = dataloaders
    basicsr.train.EnlargedSampler = sampler_class
    basicsr.utils.options.init_dist = init_dist

