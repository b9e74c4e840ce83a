"""The three compatibility fixes this project applies to basicsr 1.4.2; imported before basicsr.

1. On import: basicsr imports `torchvision.transforms.functional_tensor`, a module that torchvision
   0.17 renamed to `_functional_tensor`. Aliasing the old name lets basicsr (and realesrgan, which
   imports basicsr) import unchanged.
2. and 3. For its train/test pipelines (`make_basicsr_trainer_device_agnostic`): resuming from a
   training state (`load_resume_state`) and the `--launcher pytorch` set-up, on any device.

Nothing in site-packages is edited.
"""
import os
import sys

from .errors import CheckpointError

try:
    import torchvision.transforms.functional_tensor  # noqa: F401  # pyright: ignore[reportMissingImports]  (torchvision < 0.17)
except ImportError:
    import torchvision.transforms._functional_tensor as _functional_tensor

    sys.modules['torchvision.transforms.functional_tensor'] = _functional_tensor


def read_training_state(path, device):
    """The training state BasicSR saved at `path` ({'epoch', 'iter', 'optimizers', 'schedulers'}), tensors on
    `device`, read with weights_only=True. Raises CheckpointError naming the file if it is empty, truncated,
    unreadable or not such a state."""
    import torch

    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # empty, truncated, random bytes, pickled code: all unusable
        reason = str(err).splitlines()[0] if str(err) else ''
        raise CheckpointError(f'{path}: not a readable training state ({type(err).__name__}: {reason})') from None
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


def make_basicsr_trainer_device_agnostic():
    """Let basicsr 1.4.2's train/test pipelines run on CPU and under torchrun (called by train.py/test.py).

    - resume: basicsr maps the resume state to `torch.cuda.current_device()`, which fails without
      a GPU, and trusts the newest state file; ours is `load_resume_state` (the run's device,
      weights_only=True, truncated or empty states skipped).
    - `--launcher pytorch`: basicsr always uses NCCL and `torch.cuda.set_device`; ours picks gloo
      without CUDA (one process per CPU "rank") and NCCL with one GPU per local rank otherwise.
    """
    import basicsr.train
    import basicsr.utils.options
    import torch
    import torch.distributed as dist

    def init_dist(launcher, backend=None, **kwargs):
        if launcher != 'pytorch':
            raise ValueError(f'only --launcher pytorch (torchrun) is supported, got {launcher!r}')
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        dist.init_process_group(backend='nccl' if torch.cuda.is_available() else 'gloo', **kwargs)

    basicsr.train.load_resume_state = load_resume_state
    basicsr.utils.options.init_dist = init_dist

