"""LR-grid index: how much of an upscaled image's detail is locked to the low-resolution pixel grid.

An output at integer scale s has s phases per axis: output column j has phase j mod s, and phase 0 is the
output pixel whose left (top) edge is an LR pixel's left (top) edge, so the step from phase s - 1 to phase 0
crosses an LR pixel boundary. The phase profile is the mean absolute gray-level step between neighbours at each
phase, normalised to mean 1. Natural detail and smooth interpolation give a smooth profile; structure that
repeats with the LR grid (nearest-neighbour staircases, tile seams, checkerboards) gives a spike, which the
index measures as the largest deviation of a phase from the mean of its two circular neighbours.
"""
from dataclasses import dataclass

import numpy as np
import torch

from ciaosr_arch.evaluation import LUMA_WEIGHTS


class GridIndexUndefined(ValueError):
    """The index cannot be computed: a scale that is not an integer >= 2, an image too small, or a flat one."""


@dataclass(frozen=True)
class GridIndex:
    """`index`: the largest |profile[p] - (profile[p - 1] + profile[p + 1]) / 2| (circular), between 0 (the
    profile is a straight line, e.g. flat) and s (all steps at one phase); `profile`: s values with mean 1."""

    index: float
    profile: tuple


def phase_profile(img, scale):
    """The phase profile of an output image at integer scale `scale` (tuple of `scale` floats with mean 1).

    img: numpy array or torch tensor, [H, W] gray or [H, W, 3] RGB, uint8 or float in any range (the profile is
    invariant to gain and offset). RGB is reduced to gray by BT.601 luma (0.299 R + 0.587 G + 0.114 B,
    `ciaosr_arch.evaluation.LUMA_WEIGHTS`). profile[p] is the pooled mean of |y[i, j + 1] - y[i, j]| over all
    columns j = p (mod scale) and |y[i + 1, j] - y[i, j]| over all rows i = p (mod scale), divided by the mean
    over p; pixel [0, 0] must be the top-left output pixel of an LR pixel (crop an output at multiples of scale).
    GridIndexUndefined: scale not an integer >= 2, H or W below scale + 1 (a phase without steps), or no
    steps at all (a flat image). ValueError for other shapes.
    """
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 3:
        gray = img.astype(np.float64) @ LUMA_WEIGHTS
    elif img.ndim == 2:
        gray = img.astype(np.float64)
    else:
        raise ValueError(f'expected an [H, W] or [H, W, 3] image, got shape {img.shape}')
    if float(scale) != int(scale) or scale < 2:
        raise GridIndexUndefined(f'the LR-grid index needs an integer scale >= 2, got {scale:g}')
    scale = int(scale)
    if min(gray.shape) < scale + 1:
        raise GridIndexUndefined(f'a {gray.shape[1]}x{gray.shape[0]} image has phases without steps at x{scale} '
                                 f'(at least {scale + 1} px per side are needed)')
    across = np.abs(np.diff(gray, axis=1))  # [H, W - 1]: step from column j to j + 1, at phase j mod scale
    down = np.abs(np.diff(gray, axis=0))  # [H - 1, W]
    sums = np.array([across[:, p::scale].sum() + down[p::scale].sum() for p in range(scale)])
    counts = np.array([across[:, p::scale].size + down[p::scale].size for p in range(scale)])
    means = sums / counts
    if not means.any():
        raise GridIndexUndefined('a flat image has no steps to compare')
    return tuple((means / means.mean()).tolist())


def grid_index(img, scale):
    """GridIndex (index and phase profile) of an output image at integer scale `scale`; see `phase_profile` for
    the input (numpy/torch, [H, W] or [H, W, 3], uint8 or float), the gray conversion, the phase origin and the
    errors (GridIndexUndefined, ValueError).

    For methods that upscale by a fixed factor and resize the rest (Real-ESRGAN x4 + Lanczos at x8), pass the
    final output and the final scale: the phases are those of the LR grid.
    """
    profile = np.array(phase_profile(img, scale))
    deviation = np.abs(profile - (np.roll(profile, 1) + np.roll(profile, -1)) / 2)
    return GridIndex(float(deviation.max()), tuple(profile.tolist()))
