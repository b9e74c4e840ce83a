"""BSRGAN's degradation model at continuous scales, batched on the device of the input.

Zhang et al., "Designing a Practical Degradation Model for Deep Blind Image Super-Resolution", ICCV 2021.
Operations, probabilities and ranges are those of the paper and of its authors' `degradation_bsrgan`
(github.com/cszn/BSRGAN, utils/utils_blindsr.py); the code is ours. For an LR of GT / s:

1. with prob. 0.25, a first x1/2 resize (antialiased bicubic, as MATLAB's imresize, or a random
   bilinear/bicubic/area resize, 1/2 each); the remaining factor is then sf = s / 2, else sf = s.
   The public code does this at x4 only; here at every s >= 2 (so that sf >= 1).
2. seven steps in a random order (one order per batch), the down-sampling always before the resize:
   two blurs (`gaussian_kernels`); a down-sampling (`downsample`: a random resize by 1 / U[1, 2 sf]
   (the "down-up" case when that overshoots the target), or blur + nearest to the target);
   a bilinear/bicubic/area resize to the target size round(H / s) x round(W / s); Gaussian noise
   (`gaussian_noise`); JPEG with prob. 0.9; processed camera-sensor noise with prob. 0.25 (`camera_noise`).
3. a final JPEG; quantisation to 1/255.

Per sample: blur kernels, noise levels, color vs gray noise, JPEG qualities, whether the JPEG and the
camera noise apply. Per batch: the order, the resizes, channel-correlated vs color/gray noise. Every draw
comes from the global Python/NumPy/torch generators, which BasicSR's `set_random_seed` seeds, so a seed
fixes the output.
"""
import contextlib
import random

import numpy as np
import torch
from basicsr.data.degradations import bivariate_Gaussian, random_add_gaussian_noise_pt
from basicsr.utils import set_random_seed
from torch import nn
from torch.nn import functional as F

from .degradations import ContiguousDiffJPEG, blur, random_resize

HALVE_PROB = 0.25  # `scale2_prob` of the public code
BLUR_KERNEL_SIZES = list(range(7, 26, 2))  # 2 * randint(2, 11) + 3 in the public code
BLUR_PAD_TO = 25
MIN_SIGMA = 0.1  # px, floor of blur widths: the code's U[0, max) allows 0 (no Gaussian); 0.1: its `downsample` minimum
DOWN_RESIZE_PROB = 0.75  # `downsample`: random resize, else blur + nearest
NOISE_LEVELS = [2, 25]  # Gaussian noise sigma in 0-255 units; also the level of the channel-correlated noise
CORRELATED_NOISE_PROB = 0.2  # the code's noise types: color 0.4, gray 0.4, channel-correlated 0.2
JPEG_PROB = 0.9
JPEG_QUALITY = [30, 95]  # integer qualities, both ends included
CAMERA_NOISE_PROB = 0.25  # `isp_prob`
GAMMA = 2.2
SHOT_NOISE_RANGE = [1e-4, 1.2e-2]  # Brooks et al. 2019: log-uniform shot noise level (linear [0, 1] units)
READ_NOISE_FIT = [2.18, 1.20, 0.26]  # Brooks et al. 2019: log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26^2)


def gaussian_kernels(batch, sf):
    """BSRGAN's blur kernels, one per sample, zero-padded to 25x25: float32 [batch, 25, 25].

    Size in {7, 9, ..., 25}; anisotropic (prob. 0.5): variances along the two axes ~ U[0, 4 + sf],
    angle ~ U[0, pi); else isotropic: width ~ U[0, 2 + 0.2 sf]. Widths are at least MIN_SIGMA px.
    sf is the down-scaling factor still to come (continuous here).
    """
    kernels = []
    for _ in range(batch):
        size = random.choice(BLUR_KERNEL_SIZES)
        if np.random.uniform() < 0.5:
            sig_x, sig_y = np.sqrt(np.random.uniform(0, 4 + sf, 2)).clip(MIN_SIGMA)
            kernel = bivariate_Gaussian(size, sig_x, sig_y, np.random.uniform(0, np.pi), isotropic=False)
        else:
            kernel = bivariate_Gaussian(size, max(np.random.uniform(0, 2 + 0.2 * sf), MIN_SIGMA), None, None)
        kernels.append(np.pad(kernel, (BLUR_PAD_TO - size) // 2))
    return torch.from_numpy(np.stack(kernels)).float()


def downsample(img, sf, size):
    """BSRGAN's second down-sampling of img [B, C, H, W] by the factor sf to the target `size` (h, w).

    Prob. 0.75: a random bilinear/bicubic/area resize by 1 / U[1, 2 sf] (past the target: the paper's
    down-up sampling once the final resize brings it to `size`); else an isotropic Gaussian blur of
    width U[0.1, 0.6 sf] and nearest down-sampling to `size`. 'nearest-exact' takes the HR pixel under
    each LR pixel's centre, the alignment that the public code gets from a shifted kernel.
    """
    if np.random.uniform() < DOWN_RESIZE_PROB:
        factor = np.random.uniform(1, 2 * sf)
        return random_resize(img, size=(max(1, int(img.shape[-2] / factor)), max(1, int(img.shape[-1] / factor))))
    kernels = np.stack([bivariate_Gaussian(BLUR_PAD_TO, np.random.uniform(0.1, 0.6 * sf), None, None)
                        for _ in range(img.shape[0])])
    return F.interpolate(blur(img, torch.from_numpy(kernels).float()), size=size, mode='nearest-exact')


def gaussian_noise(img):
    """BSRGAN's Gaussian noise on img [B, 3, H, W] in [0, 1], clipped to [0, 1].

    Prob. 0.8: per sample, color or gray (1/2 each) noise of sigma U[2, 25] / 255 (BasicSR's
    `random_add_gaussian_noise_pt`); else `channel_correlated_noise`.
    """
    if np.random.uniform() < CORRELATED_NOISE_PROB:
        return channel_correlated_noise(img)
    return random_add_gaussian_noise_pt(
        img, sigma_range=NOISE_LEVELS, gray_prob=0.5,  # pyright: ignore[reportArgumentType]  (BasicSR's untyped
        clip=True, rounds=False)  # default gray_prob=0 makes checkers take it for an int; it is a probability)


def channel_correlated_noise(img):
    """Noise with a random 3x3 channel covariance per sample, clipped to [0, 1]: (25 / 255)^2 U^T D U,
    D = diag(U[0, 1)^3), U a random orthonormal basis (BSRGAN's third noise type; the public code takes
    the element-wise absolute value of that matrix, which need not be a covariance: not done here)."""
    factors = []
    for _ in range(img.shape[0]):
        basis, _ = np.linalg.qr(np.random.uniform(size=(3, 3)))
        factors.append(basis.T * np.sqrt(np.random.uniform(size=3)))  # U^T D^(1/2): its square is U^T D U
    factors = torch.from_numpy(np.stack(factors)).to(img) * (NOISE_LEVELS[1] / 255)
    return (img + torch.einsum('bij,bjhw->bihw', factors, torch.randn_like(img))).clamp(0, 1)


def camera_noise(img, prob=CAMERA_NOISE_PROB):
    """Processed camera-sensor noise on img [B, 3, H, W] in [0, 1] (sRGB), per sample with probability `prob`.

    The public code takes an ISP model it does not release; this is a simple "unprocess" approximation:
    sRGB -> linear by x^2.2, shot + read noise in linear space (Gaussian, variance shot * x + read),
    back by x^(1 / 2.2), clipped to [0, 1]. Levels per sample as in Brooks et al., "Unprocessing Images for
    Learned Raw Denoising" (CVPR 2019): shot log-uniform in [1e-4, 1.2e-2], log(read) = 2.18 log(shot) + 1.20
    + N(0, 0.26^2). The GT is left as is (the round trip without noise is the identity).
    """
    b = img.shape[0]
    log_shot = np.random.uniform(np.log(SHOT_NOISE_RANGE[0]), np.log(SHOT_NOISE_RANGE[1]), b)
    slope, intercept, spread = READ_NOISE_FIT
    log_read = slope * log_shot + intercept + np.random.normal(0, spread, b)
    shot, read = (torch.from_numpy(np.exp(v)).to(img).view(b, 1, 1, 1) for v in (log_shot, log_read))
    linear = img.clamp(min=1e-8) ** GAMMA
    noisy = (linear + (shot * linear + read).sqrt() * torch.randn_like(img)).clamp(1e-8, 1) ** (1 / GAMMA)
    apply = torch.rand(b, device=img.device) < prob
    return torch.where(apply.view(b, 1, 1, 1), noisy, img)


def jpeg(img, jpeger, prob=1.0):
    """JPEG (`jpeger`: a DiffJPEG) of img [B, 3, H, W] per sample with probability `prob`, integer quality
    in [30, 95]."""
    b = img.shape[0]
    quality = torch.randint(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, (b,), device=img.device).float()
    out = jpeger(img.clamp(0, 1), quality=quality)
    if prob >= 1:
        return out
    return torch.where((torch.rand(b, device=img.device) < prob).view(b, 1, 1, 1), out, img)


def halve(img):
    """The first x1/2 resize: antialiased bicubic (as MATLAB's imresize) or a random resize, 1/2 each."""
    size = (max(1, round(img.shape[-2] / 2)), max(1, round(img.shape[-1] / 2)))
    if np.random.uniform() < 0.5:
        return F.interpolate(img, size=size, mode='bicubic', antialias=True)
    return random_resize(img, size=size)


class BSRGANDegradation(nn.Module):
    """BSRGAN's degradation model (module docstring) on the device of the input; `.to(device)` moves the JPEG
    helper. Call: gt [B, 3, H, W] in [0, 1], scale s >= 1 -> lq [B, 3, round(H / s), round(W / s)],
    multiples of 1/255 in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.jpeger = ContiguousDiffJPEG(differentiable=False)

    @torch.no_grad()
    def forward(self, gt, scale):
        if scale < 1:
            raise ValueError(f'BSRGAN degradation: scale {scale} < 1 (it only down-scales)')
        size = (max(1, round(gt.shape[-2] / scale)), max(1, round(gt.shape[-1] / scale)))
        out, sf = gt, scale
        if scale >= 2 and np.random.uniform() < HALVE_PROB:
            out, sf = halve(out).clamp(0, 1), scale / 2

        def blur_step(img):
            return blur(img, gaussian_kernels(img.shape[0], sf))

        steps = {'blur1': blur_step, 'blur2': blur_step, 'downsample': lambda img: downsample(img, sf, size),
                 'resize': lambda img: random_resize(img, size=size), 'noise': gaussian_noise,
                 'jpeg': lambda img: jpeg(img, self.jpeger, JPEG_PROB), 'camera_noise': camera_noise}
        order = random.sample(list(steps), len(steps))
        first, second = order.index('downsample'), order.index('resize')
        if first > second:
            order[first], order[second] = order[second], order[first]
        for name in order:
            out = steps[name](out).clamp(0, 1)
        out = jpeg(out, self.jpeger)
        return torch.clamp((out * 255).round(), 0, 255) / 255


@contextlib.contextmanager
def seeded(seed):
    """Within the block, the Python/NumPy/torch generators are seeded by BasicSR's `set_random_seed(seed)`;
    their states are restored afterwards. `seed=None`: the generators are left alone."""
    if seed is None:
        yield
        return
    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        set_random_seed(seed)
        try:
            yield
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])


def bsrgan_degrade(gt, scale, seed=None):
    """BSRGAN-degraded LR of gt [B, 3, H, W] in [0, 1] (any device) at a continuous scale s >= 1:
    lq [B, 3, round(H / s), round(W / s)], multiples of 1/255 in [0, 1], on gt's device.

    The input itself is degraded (no sharpening). With `seed`, the output is fixed by it and the global
    generators are left as they were; without, it draws from them.
    """
    with seeded(seed):
        return BSRGANDegradation().to(gt.device)(gt, scale)
