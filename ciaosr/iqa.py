"""Image-quality metrics that work offline: parameter files from a folder, or a reason why a metric is unavailable.

pyiqa fetches parameter files into its cache (`torch.hub.get_dir()/pyiqa`) on first use. `create_metric`
either reads them from a given folder (never downloading) or lets pyiqa use its cache and download with a
bounded timeout; whatever goes wrong comes back as a reason string, so reports can say
"unavailable: <reason>" instead of printing a number made without the metric's parameters. `create_lpips` does the
same for LPIPS-alex of the `lpips` package (the benchmark's full-reference perceptual distance).
"""
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

DOWNLOAD_TIMEOUT_S = 30  # per socket operation; an unreachable host fails instead of hanging


@dataclass(frozen=True)
class MetricSpec:
    """What a pyiqa metric needs and how reports describe it."""

    param_file: str | None  # pyiqa parameter file, looked up in params_dir (pyiqa's cache by default)
    variant: str
    min_side: int = 1  # smallest image side (px) the metric is defined for; smaller images get no value


METRICS = {
    'niqe': MetricSpec('niqe_modelparameters.mat',
                       "pyiqa 'niqe': Y channel of YIQ (pyiqa's default colour space, rounded to 0-255), "
                       'pristine model of the original NIQE release', min_side=96),  # one 96 x 96 block
    'brisque': MetricSpec('brisque_svm_weights.pth',
                          "pyiqa 'brisque': Y channel, LIVE BRISQUE SVR model (774 support vectors)",
                          min_side=7),  # its 7 x 7 Gaussian window (pyiqa raises IndexError below)
    # PIQE: one 16 x 16 block; pyiqa mirror-pads smaller images, so below 16 px it would score its own padding.
    'piqe': MetricSpec(None, "pyiqa 'piqe': Y channel", min_side=16),
}
LPIPS_FILE = 'lpips_alex_v0.1.safetensors'  # `lpips` package keys: net.slice1.0.weight, lin0.model.1.weight, ...


def _describe(err):
    """One-line 'Type: message' of an exception."""
    lines = str(err).splitlines()
    return f'{type(err).__name__}: {lines[0]}' if lines else type(err).__name__


def _unsafe_reason(path):
    """Why a .pth file cannot be handed to pyiqa (which unpickles it with weights_only=False), or None."""
    if path.suffix != '.pth':
        return None
    try:
        torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # code in a pickle, truncated or random bytes: all refused the same way
        return f'{path} is not a plain tensor file ({_describe(err)})'
    return None


class MetricUnavailable(RuntimeError):
    """A metric that cannot be computed here (parameters missing, unreadable or not downloadable); says why."""


def create_metric(name: str, params_dir: str | Path | None = None, device: str | torch.device = 'cpu'):
    """pyiqa metric `name` (callable on [N, 3, H, W] RGB in [0, 1]); MetricUnavailable saying why it cannot be had.

    params_dir: folder holding the metric's parameter file (`METRICS[name].param_file`); a missing or
    unreadable file makes the metric unavailable, and nothing is downloaded. None: pyiqa's own behaviour
    (its cache, downloading what is missing); a failed download makes the metric unavailable.
    ValueError for an unknown name.
    """
    if name not in METRICS:
        raise ValueError(f'unknown metric {name!r}; known: {", ".join(METRICS)}')
    spec = METRICS[name]
    options = {}
    required = []
    if spec.param_file and params_dir is not None:
        options['pretrained_model_path'] = str(Path(params_dir) / spec.param_file)
        required.append(Path(params_dir) / spec.param_file)
    missing = [str(path) for path in required if not path.is_file()]
    if missing:
        raise MetricUnavailable(f'parameter file missing: {", ".join(missing)}')
    unsafe = [reason for path in required if (reason := _unsafe_reason(path))]
    if unsafe:
        raise MetricUnavailable('; '.join(unsafe))

    try:
        import pyiqa  # heavy to import, and an extra
    except ModuleNotFoundError:
        raise MetricUnavailable('pyiqa is not installed: pip install "ciaosr[report]"') from None
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return pyiqa.create_metric(name, device=device, **options)
    except Exception as err:  # failed download, unreadable .mat, wrong keys: the metric cannot be used
        where = ', '.join(map(str, required)) if params_dir is not None else "pyiqa's cache or its download"
        raise MetricUnavailable(f'cannot load its parameters from {where}: {_describe(err)}') from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def create_lpips(params_dir: str | Path | None = None, device: str | torch.device = 'cpu'):
    """LPIPS v0.1 with AlexNet (Zhang et al., CVPR 2018) of the `lpips` package: a callable (a, b) -> [N, 1, 1, 1]
    distances of two [N, 3, H, W] RGB batches in [0, 1] (0: identical; no gradients).

    params_dir: folder holding LPIPS_FILE, the whole network's weights under the `lpips` package's keys (AlexNet
    trunk and linear layers); nothing is downloaded, and a missing file, or one with other keys, makes the metric
    unavailable. None: `lpips.LPIPS(net='alex')` as the package builds it (linear layers from its wheel, the
    AlexNet trunk from torchvision's cache, downloaded if missing). MetricUnavailable saying why it cannot be had
    (also when the `lpips` package is not installed: extra `report`).
    """
    try:
        import lpips
        from safetensors.torch import load_file
    except ModuleNotFoundError:
        raise MetricUnavailable('the lpips package is not installed: pip install "ciaosr[report]"') from None
    if params_dir is None:
        try:
            net = lpips.LPIPS(net='alex', verbose=False)
        except Exception as err:  # failed download of the AlexNet trunk
            raise MetricUnavailable(f"cannot load lpips' AlexNet: {_describe(err)}") from None
    else:
        path = Path(params_dir) / LPIPS_FILE
        if not path.is_file():
            raise MetricUnavailable(f'parameter file missing: {path}')
        with warnings.catch_warnings():  # torchvision's notice about lpips' deprecated `pretrained` argument
            warnings.simplefilter('ignore', UserWarning)
            net = lpips.LPIPS(net='alex', pnet_rand=True, pretrained=False, verbose=False)
        try:
            state = load_file(path)
            result = net.load_state_dict(state, strict=False)
        except Exception as err:  # not a safetensors file, tensors of the wrong shape
            raise MetricUnavailable(f'cannot load {path}: {_describe(err)}') from None
        # `lins.K` is the ModuleList view of `linK`: loading linK loads it.
        missing = [key for key in result.missing_keys if not (key.startswith('lins.') and f'lin{key[5:]}' in state)]
        if missing or result.unexpected_keys:
            raise MetricUnavailable(f'{path} is not LPIPS-alex of the lpips package: missing keys {missing[:3]}, '
                                    f'unexpected keys {result.unexpected_keys[:3]}')
    net = net.to(device).eval()

    @torch.no_grad()
    def distance(a, b):
        return net(a.to(device), b.to(device), normalize=True)
    return distance
