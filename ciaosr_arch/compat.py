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
