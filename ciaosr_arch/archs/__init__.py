"""Archs of the plugin; importing this package registers them in BasicSR's ARCH_REGISTRY."""
from collections.abc import Mapping
from typing import Any

from .ciaosr_arch import CiaoSR
from .liif_arch import LIIF

ARCHS = {'CiaoSR': CiaoSR, 'LIIF': LIIF}  # by the `type` of an arch dict


def build_net(arch: Mapping[str, Any]) -> CiaoSR | LIIF:
    """Network (random weights) from an arch dict {'type': 'CiaoSR'|'LIIF', **constructor options}."""
    options = dict(arch)
    return ARCHS[options.pop('type')](**options)


__all__ = ['ARCHS', 'CiaoSR', 'LIIF', 'build_net']
