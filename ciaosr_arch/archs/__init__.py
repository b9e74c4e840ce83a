"""Archs of the plugin; importing this package registers them in BasicSR's ARCH_REGISTRY."""
from .ciaosr_arch import CiaoSR
from .liif_arch import LIIF

__all__ = ['CiaoSR', 'LIIF']
