"""Building the network a checkpoint describes without allocating more than the checkpoint's own tensors.

A file's options (channels, block counts, sizes) decide how big the network they build is. `build_skeleton` builds
it on the meta device (every shape, no storage) and stops as soon as it has more parameter tensors than the file
holds, so options that declare a huge network cost neither memory nor time; `checkpoint.load_model` builds the
network for real only once the skeleton matches the file key by key and shape by shape. SwinIR computes its
drop-path rates during construction with `.item()`, which meta tensors cannot do: `_LinspaceOnCpu` makes them on
the CPU (one float per block, a count `checkpoint.check_arch` bounds).
"""
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.nn.modules.module import register_module_parameter_registration_hook
from torch.overrides import TorchFunctionMode

from .archs import LIIF, CiaoSR, build_net
from .errors import CheckpointError


class _LinspaceOnCpu(TorchFunctionMode):
    """Inside `torch.device('meta')`: make `torch.linspace` on the CPU. SwinIR reads its per-block drop-path
    rates with `.item()`, which meta tensors cannot do; they are one float per block (bounded by `check_arch`)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.linspace and kwargs.get('device') is None:
            kwargs = {**kwargs, 'device': 'cpu'}
        return func(*args, **kwargs)


def build_skeleton(arch: Mapping[str, Any], max_parameters: int, source: str | Path) -> CiaoSR | LIIF:
    """The network of a checked `arch` ({'type': ..., **options}, see `checkpoint.check_arch`) on the meta device:
    every shape, no storage.

    Building stops with CheckpointError as soon as the network has more than `max_parameters` parameter
    tensors (pass the file's tensor count: strict loading needs one tensor per parameter), so options
    that declare a huge network cost neither memory nor time. Any other build failure (e.g. an option
    value the constructor rejects) is a CheckpointError naming `source`.
    """
    count = 0

    def count_parameter(module, name, param):
        nonlocal count
        count += 1
        if count > max_parameters:
            raise CheckpointError(f'{source}: its options declare more parameters than the {max_parameters} '
                                  f'tensors it holds')

    handle = register_module_parameter_registration_hook(count_parameter)
    try:
        with torch.device('meta'), _LinspaceOnCpu():
            return build_net(arch)
    except CheckpointError:
        raise
    except Exception as err:  # the constructors' own checks (ValueError, AssertionError ...), shape arithmetic
        raise CheckpointError(f'{source}: cannot build {arch["type"]} from its options '
                              f'({type(err).__name__}: {err})') from None
    finally:
        handle.remove()
