"""The one compatibility fix this project applies to its dependencies; imported before basicsr.

basicsr 1.4.2 imports `torchvision.transforms.functional_tensor`, a module that torchvision
0.17 renamed to `_functional_tensor`. Aliasing the old name lets basicsr (and realesrgan, which
imports basicsr) import unchanged; nothing in site-packages is edited.
"""
import sys

try:
    import torchvision.transforms.functional_tensor  # noqa: F401  (torchvision < 0.17)
except ImportError:
    import torchvision.transforms._functional_tensor as _functional_tensor

    sys.modules['torchvision.transforms.functional_tensor'] = _functional_tensor


def make_basicsr_trainer_device_agnostic():
    """Let basicsr 1.4.2's train/test pipelines run on CPU and under torchrun (called by train.py/test.py).

    - resume: basicsr maps the resume state to `torch.cuda.current_device()`, which fails without
      a GPU; ours maps it to the run's device and loads it with weights_only=True.
    - `--launcher pytorch`: basicsr always uses NCCL and `torch.cuda.set_device`; ours picks gloo
      without CUDA (one process per CPU "rank") and NCCL with one GPU per local rank otherwise.
    """
    import os
    from os import path as osp

    import basicsr.train
    import basicsr.utils.options
    import torch
    import torch.distributed as dist
    from basicsr.utils import check_resume, scandir

    def load_resume_state(opt):
        path = opt['path'].get('resume_state')
        state_dir = opt['path']['training_states']
        if opt['auto_resume'] and osp.isdir(state_dir):
            states = [int(name.split('.state')[0]) for name in scandir(state_dir, suffix='state')]
            if states:
                path = opt['path']['resume_state'] = osp.join(state_dir, f'{max(states)}.state')
        if not path:
            return None
        device = torch.device('cuda', torch.cuda.current_device()) if opt['num_gpu'] else torch.device('cpu')
        state = torch.load(path, map_location=device, weights_only=True)
        check_resume(opt, state['iter'])
        return state

    def init_dist(launcher, backend=None, **kwargs):
        if launcher != 'pytorch':
            raise ValueError(f'only --launcher pytorch (torchrun) is supported, got {launcher!r}')
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        dist.init_process_group(backend='nccl' if torch.cuda.is_available() else 'gloo', **kwargs)

    basicsr.train.load_resume_state = load_resume_state
    basicsr.utils.options.init_dist = init_dist
