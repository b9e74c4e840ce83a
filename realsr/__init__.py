"""Real-world arbitrary-scale pipeline (degradations, two-stage training); registers with BasicSR.

`RealWorldSRDataset` (GT crops + kernels), `RealCiaoSRNetModel` (stage 1, L1) and `RealCiaoSRGANModel`
(stage 2, L1 + perceptual + GAN); the degradations themselves are `realsr.degradations.RealPairSynthesis`.
"""
import ciaosr_arch  # noqa: F401  (first: the basicsr compatibility fix and CiaoSR's registrations)

from .data import RealWorldSRDataset
from .model import RealCiaoSRGANModel, RealCiaoSRNetModel

__all__ = ['RealCiaoSRGANModel', 'RealCiaoSRNetModel', 'RealWorldSRDataset']
