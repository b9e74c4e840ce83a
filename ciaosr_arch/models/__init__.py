"""Models of the plugin; importing this package registers them in BasicSR's MODEL_REGISTRY."""
from .ciaosr_model import CiaoSRModel

__all__ = ['CiaoSRModel']
