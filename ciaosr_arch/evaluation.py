"""Full-reference SR benchmark protocol of the LIIF / LTE / CiaoSR papers (benchmark script and validation).

- LR: the HR image is cropped with LIIF's rule (h = floor(H / s + 1e-9), HR cropped to round(h * s): the usual
  mod-s crop for integer s), down-sampled to (h, w) by MATLAB bicubic `imresize` and rounded to 8 bits, as the
  published benchmark LR files are.
- Metrics: the SR output rounded to 8 bits (`image.to_pixels`, as BasicSR's `tensor2img`), BasicSR's PSNR and SSIM
  on the Y channel (BT.601, float) with `ceil(s)` border pixels shaved (= s for integer scales; rounding up also
  covers the boundary-affected band at non-integer ones), or in the DIV2K protocol on RGB shaving `ceil(s) + 6`.
- Single-channel HR images (Set14 bridge.png): the network gets the gray image copied to RGB and the metrics use the
  gray intensity itself, the SR output reduced to it by BT.601 luma. This is what MATLAB evaluation code does
  (Y only `if size(im, 3) == 3`) and what the published bicubic Set14 numbers need: taking the Y channel of the
  copied gray image instead scales its differences by 219/255 (+1.3 dB on bridge, +0.09 dB on the Set14 mean).
"""
import math
from collections.abc import Sequence

import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim

from .image import to_tensor
from .resize import downsample as make_lr
from .resize import resize_matlab

LUMA_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 219  # BT.601 R, G, B weights: Y rescaled to [0, 255]


def as_scale(text: str | float) -> float:
    """A scale from text or a number: a finite number > 0, as int when whole (so records and labels read 'x4', not
    'x4.0'). ValueError otherwise."""
    try:
        scale = float(text)
    except (TypeError, ValueError):
        raise ValueError(f'a scale must be a finite number > 0, got {text!r}') from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f'a scale must be a finite number > 0, got {text}')
    return int(scale) if scale.is_integer() else scale


def scale_label(scale: float) -> str:
    return f'x{scale:g}'


def lr_size(hr_size: Sequence[int], scale: float) -> tuple[int, int]:
    """LIIF's LR size (floor(H / s + 1e-9), floor(W / s + 1e-9)) of an HR size (H, W)."""
    h, w = hr_size
    return math.floor(h / scale + 1e-9), math.floor(w / scale + 1e-9)


def to_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 [H, W] gray or [H, W, 3] RGB -> [H, W, 3] RGB."""
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def benchmark_pair(hr: np.ndarray, scale: float, downsample: str = 'matlab') -> tuple[torch.Tensor, np.ndarray]:
    """(LR float [1, 3, h, w] in [0, 1] at 8-bit levels, HR uint8 [H', W'(, 3)] cropped) of an HR image.

    hr: uint8 [H, W, 3] RGB or [H, W] gray (kept single-channel in the returned HR for `psnr_ssim`).
    downsample: 'matlab' (bicubic imresize, the benchmark protocol) or 'pil' (PIL bicubic, official CiaoSR training).
    """
    h, w = lr_size(hr.shape[:2], scale)
    if min(h, w) < 1:
        raise ValueError(f'HR image {hr.shape[1]}x{hr.shape[0]} is too small for scale {scale}')
    hr = hr[:round(h * scale), :round(w * scale)]
    lr = make_lr(to_rgb(hr), (h, w), downsample)  # uint8, as the training data's LR
    return to_tensor(lr), hr


def bicubic_upsample(lr: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic baseline of the published tables: MATLAB bicubic imresize of lr [B, 3, h, w] to size (H, W)."""
    up = resize_matlab(lr.permute(2, 3, 0, 1).cpu().numpy(), size).clip(0, 1)  # [H, W, B, 3]
    return torch.from_numpy(np.ascontiguousarray(up.transpose(2, 3, 0, 1), dtype=np.float32)).to(lr.device)


def shave(scale: float, rgb_shave6: bool = False) -> int:
    """Border pixels excluded from the metrics: ceil(scale), plus 6 in the DIV2K protocol."""
    return math.ceil(scale) + (6 if rgb_shave6 else 0)


def psnr_ssim(sr: np.ndarray, hr: np.ndarray, scale: float, rgb_shave6: bool = False) -> tuple[float, float]:
    """(PSNR, SSIM) of sr uint8 [H, W, 3] RGB against hr uint8 [H, W, 3] RGB or [H, W] gray (same H, W).

    Y channel with shave = ceil(scale); single-channel hr: its gray intensity against the luma of sr;
    rgb_shave6: RGB (gray hr copied to RGB) with shave = ceil(scale) + 6.
    """
    if sr.shape[:2] != hr.shape[:2]:
        raise ValueError(f'SR size {sr.shape[:2]} differs from HR size {hr.shape[:2]}')
    y_channel = hr.ndim == 3 and not rgb_shave6
    if rgb_shave6:
        hr = to_rgb(hr)
    elif hr.ndim == 2:
        sr = sr @ LUMA_WEIGHTS
    else:
        sr, hr = sr[..., ::-1], hr[..., ::-1]  # BasicSR's Y conversion takes BGR
    border = shave(scale, rgb_shave6)
    return (calculate_psnr(sr, hr, border, test_y_channel=y_channel),
            calculate_ssim(sr, hr, border, test_y_channel=y_channel))
