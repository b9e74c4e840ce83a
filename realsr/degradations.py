"""Real-world training pairs for arbitrary-scale SR: Real-ESRGAN's second-order degradations
with the final resize to GT/s for a continuous scale s, then an LR crop and the GT window it predicts.

Kernels are drawn per sample in the dataset (`blur_kernel`, `final_sinc_kernel`, NumPy/Python RNGs);
everything else runs batched on the device of the input tensors (`RealPairSynthesis`, Python/NumPy/torch
RNGs). All draws come from the global generators that BasicSR's `set_random_seed` seeds, so a seed fixes
every batch.
"""
import math
import random

import numpy as np
import torch
from basicsr.data.degradations import (
    circular_lowpass_kernel,
    random_add_gaussian_noise_pt,
    random_add_poisson_noise_pt,
    random_mixed_kernels,
)
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.img_process_util import filter2D
from torch import nn
from torch.nn import functional as F

from ciaosr_arch.errors import DataError
from ciaosr_arch.options import check_section, kinds_of

KERNEL_SIZES = list(range(7, 22, 2))
KERNEL_PAD_TO = 21
BLUR_TYPES = ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']

# Dataset-side kernel options; Real-ESRGAN's names, suffix '2' = the second degradation.
KERNEL_DEFAULTS = {
    'kernel_list': BLUR_TYPES, 'kernel_prob': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], 'sinc_prob': 0.1,
    'blur_sigma': [0.2, 3], 'betag_range': [0.5, 4], 'betap_range': [1, 2],
    'kernel_list2': BLUR_TYPES, 'kernel_prob2': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], 'sinc_prob2': 0.1,
    'blur_sigma2': [0.2, 1.5], 'betag_range2': [0.5, 4], 'betap_range2': [1, 2],
    'final_sinc_prob': 0.8,
}

# Model-side options (resize, noise, JPEG, final resize, crop, queries): Real-ESRGAN's names, the final scale range,
# the LR crop side and the side of the GT window whose pixels are the queries.
SYNTHESIS_DEFAULTS = {
    'resize_prob': [0.2, 0.7, 0.1], 'resize_range': [0.15, 1.5], 'gaussian_noise_prob': 0.5,
    'noise_range': [1, 30], 'poisson_scale_range': [0.05, 3], 'gray_noise_prob': 0.4, 'jpeg_range': [30, 95],
    'second_blur_prob': 0.8, 'resize_prob2': [0.3, 0.4, 0.3], 'resize_range2': [0.3, 1.2],
    'gaussian_noise_prob2': 0.5, 'noise_range2': [1, 25], 'poisson_scale_range2': [0.05, 2.5],
    'gray_noise_prob2': 0.4, 'jpeg_range2': [5, 50],
    'scale_range': [1, 4], 'lq_size': 64, 'query_window': 64,
    'bsrgan_prob': 0.0,  # per batch: BSRGAN's degradation model (realsr.bsrgan) instead of the pipeline above
}


def blur_kernel(opt, order=''):
    """Random blur kernel of the first (order '') or second ('2') degradation, zero-padded to 21x21.

    Real-ESRGAN's recipe: size in {7, ..., 21}; a sinc (circular low-pass) kernel with probability
    `sinc_prob`, else one of `kernel_list` via basicsr's `random_mixed_kernels`. Returns float32 [21, 21].
    """
    size = random.choice(KERNEL_SIZES)
    if np.random.uniform() < opt['sinc_prob' + order]:
        omega_c = np.random.uniform(np.pi / 3 if size < 13 else np.pi / 5, np.pi)
        kernel = circular_lowpass_kernel(omega_c, size, pad_to=False)
    else:
        sigma = opt['blur_sigma' + order]
        kernel = random_mixed_kernels(opt['kernel_list' + order], opt['kernel_prob' + order], size, sigma, sigma,
                                      [-math.pi, math.pi], opt['betag_range' + order], opt['betap_range' + order],
                                      noise_range=None)
    return torch.from_numpy(np.pad(kernel, (KERNEL_PAD_TO - size) // 2)).float()


def final_sinc_kernel(prob):
    """The sinc filter after the final resize (with probability `prob`), else an identity pulse: [21, 21]."""
    if np.random.uniform() < prob:
        omega_c = np.random.uniform(np.pi / 3, np.pi)
        kernel = circular_lowpass_kernel(omega_c, random.choice(KERNEL_SIZES), pad_to=KERNEL_PAD_TO)
        return torch.from_numpy(kernel).float()
    pulse = torch.zeros(KERNEL_PAD_TO, KERNEL_PAD_TO)
    pulse[KERNEL_PAD_TO // 2, KERNEL_PAD_TO // 2] = 1
    return pulse


def random_factor(probs, factor_range):
    """Real-ESRGAN's random resize factor: up in [1, max], down in [min, 1] or keep, with probabilities `probs`."""
    direction = random.choices(['up', 'down', 'keep'], probs)[0]
    if direction == 'up':
        return np.random.uniform(1, factor_range[1])
    if direction == 'down':
        return np.random.uniform(factor_range[0], 1)
    return 1.0


def random_resize(img, size):
    """img [B, C, H, W] resized to `size` (h, w) with a random mode among area, bilinear and bicubic (1/3 each): the
    whole image onto the whole image, so the result stays aligned with it (Real-ESRGAN resizes by a `scale_factor`,
    which samples the input at 1 / factor but keeps floor(H x factor) pixels: its output covers GT
    [0, floor(H f) / f), up to 1 / f GT pixels short, and every later resize stretches that)."""
    return F.interpolate(img, size=size, mode=random.choice(['area', 'bilinear', 'bicubic']))


def resized_by(img, factor):
    """`random_resize` of img [B, C, H, W] to (round(H f), round(W f)) pixels, at least 1, for a factor f."""
    return random_resize(img, (max(1, round(img.shape[-2] * factor)), max(1, round(img.shape[-1] * factor))))


def blur(img, kernels):
    """img [B, C, H, W] convolved (`filter2D`, reflect padding) with per-sample kernels [B, k, k].

    Kernels wider than the image allows (reflect padding < side) are centre-cropped and renormalised, so that
    small images (e.g. a small GT crop after a strong first down-sizing) are blurred as far as they can be.
    """
    half = min(kernels.shape[-1] // 2, min(img.shape[-2:]) - 1)
    centre = kernels.shape[-1] // 2
    kernels = kernels[:, centre - half:centre + half + 1, centre - half:centre + half + 1]
    return filter2D(img, (kernels / kernels.sum((1, 2), keepdim=True)).to(img))


def query_window_axis(lq_len, gt_len, lq_size, window):
    """One axis of `paired_window_crop`: random LR crop start, GT window start and query coordinates.

    The LR image is the GT resized by ratio = gt_len / lq_len, so LR pixel i covers GT [i, i + 1) * ratio.
    The crop [top, top + lq_size) covers the GT pixels j whose centres j + 0.5 lie in
    [top, top + lq_size) * ratio: at least lq_size >= window of them, so a window of that many always fits.
    Returns top, start and coords [window]: the window's pixel centres in the crop's [-1, 1] frame.
    """
    ratio = gt_len / lq_len
    top = random.randint(0, lq_len - lq_size)
    first = math.ceil(top * ratio - 0.5)
    last = math.ceil((top + lq_size) * ratio - 0.5) - window
    start = random.randint(first, last)
    centres = (torch.arange(start, start + window, dtype=torch.float64) + 0.5) / ratio - top
    return top, start, (centres * (2 / lq_size) - 1).float()


def paired_window_crop(lq, gt_images, lq_size, window):
    """Random LR crops and the GT windows they must predict, with exact query coordinates.

    lq [B, 3, h, w] is a degraded resize of GT images [B, 3, H, W] (`gt_images`: several aligned ones,
    e.g. GT and sharpened GT). Per sample: a random lq_size^2 LR crop and a random window^2 block of the
    GT pixels inside it. The queries are that block's pixels, row-major, so predictions reshape into a
    spatially coherent image (what perceptual and GAN losses need).
    Returns lq crops [B, 3, lq_size, lq_size], the windows of each GT image [B, 3, window, window],
    coord and cell [B, window^2, 2] (CiaoSR conventions, relative to the LR crop; cell = one GT pixel).
    """
    (h, w), (gt_h, gt_w) = lq.shape[-2:], gt_images[0].shape[-2:]
    if min(h, w) < lq_size or window > lq_size:
        raise DataError(f'LR {h}x{w} from GT {gt_h}x{gt_w}: need LR >= lq_size ({lq_size}) >= query_window '
                        f'({window}); use a GT crop (gt_size) of at least lq_size x the largest scale')
    crops, windows, coords = [], [[] for _ in gt_images], []
    for i in range(lq.shape[0]):
        top, row, rows = query_window_axis(h, gt_h, lq_size, window)
        left, col, cols = query_window_axis(w, gt_w, lq_size, window)
        crops.append(lq[i, :, top:top + lq_size, left:left + lq_size])
        for out, gt in zip(windows, gt_images):
            out.append(gt[i, :, row:row + window, col:col + window])
        coords.append(torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1).view(-1, 2))
    coord = torch.stack(coords).to(lq.device)
    cell = coord.new_tensor([2 * h / (lq_size * gt_h), 2 * w / (lq_size * gt_w)]).expand_as(coord).contiguous()
    return torch.stack(crops), [torch.stack(out) for out in windows], coord, cell


class ContiguousDiffJPEG(DiffJPEG):
    """BasicSR's DiffJPEG with a contiguous output: its NHWC-strided result survives CPU reflect padding
    and then breaks the `.view` in `filter2D` (RuntimeError: view size is not compatible, seen on CPU)."""

    def forward(self, x, quality):
        return super().forward(x, quality=quality).contiguous()


class RealPairSynthesis(nn.Module):
    """Training pairs from GT crops on their device; `.to(device)` moves the JPEG/USM helpers.

    Per batch: unsharp-masked GT (the LR starts from it and is the L1/perceptual target); blur, random
    resize, noise, JPEG; blur (prob.), random resize to (GT / s) x factor, noise; then, in random order,
    JPEG and [resize to GT / s + final sinc]; quantisation to 1/255. s ~ U[scale_range] is one continuous
    scale per batch (one LR size per batch, as Real-ESRGAN's pipeline). Then `paired_window_crop`.
    With probability `bsrgan_prob` per batch, the LR comes from BSRGAN's degradation model of the sharpened
    GT instead (`realsr.bsrgan.BSRGANDegradation`, its own kernels); the targets are the same.
    Options: SYNTHESIS_DEFAULTS (overridable); an unknown key or a value of the wrong kind is an OptionsError.
    """

    def __init__(self, opt=None):
        super().__init__()
        check_section('degradation', opt or {}, kinds_of(SYNTHESIS_DEFAULTS))
        self.opt = {**SYNTHESIS_DEFAULTS, **(opt or {})}
        self.jpeger = ContiguousDiffJPEG(differentiable=False)
        self.usm_sharpener = USMSharp()
        from .bsrgan import BSRGANDegradation  # here: realsr.bsrgan builds on this module
        self.bsrgan = BSRGANDegradation()

    def jpeg(self, img, quality_range):
        quality = img.new_zeros(img.shape[0]).uniform_(*quality_range)
        return self.jpeger(img.clamp(0, 1), quality=quality)

    def noise(self, img, order):
        """Gaussian or Poisson noise of the first (order '') or second ('2') degradation."""
        opt = self.opt
        if np.random.uniform() < opt['gaussian_noise_prob' + order]:
            return random_add_gaussian_noise_pt(img, sigma_range=opt['noise_range' + order], clip=True,
                                                rounds=False, gray_prob=opt['gray_noise_prob' + order])
        return random_add_poisson_noise_pt(img, scale_range=opt['poisson_scale_range' + order], clip=True,
                                           rounds=False, gray_prob=opt['gray_noise_prob' + order])

    @torch.no_grad()
    def degrade(self, gt, kernel1, kernel2, sinc_kernel, scale=None):
        """gt [B, 3, H, W] in [0, 1], kernels [B, 21, 21] -> (lq [B, 3, round(H/s), round(W/s)], gt_usm, s).

        lq is quantised to multiples of 1/255 in [0, 1]; s is drawn from `scale_range` unless given.
        """
        opt = self.opt
        if scale is None:
            scale = random.uniform(*opt['scale_range'])
        lq_h, lq_w = gt.shape[-2] / scale, gt.shape[-1] / scale
        gt_usm = self.usm_sharpener(gt)

        out = blur(gt_usm, kernel1)
        out = resized_by(out, random_factor(opt['resize_prob'], opt['resize_range']))
        out = self.jpeg(self.noise(out, ''), opt['jpeg_range'])

        if np.random.uniform() < opt['second_blur_prob']:
            out = blur(out, kernel2)
        factor = random_factor(opt['resize_prob2'], opt['resize_range2'])
        out = random_resize(out, (max(1, int(lq_h * factor)), max(1, int(lq_w * factor))))
        out = self.noise(out, '2')

        size = (round(lq_h), round(lq_w))
        if np.random.uniform() < 0.5:
            out = self.jpeg(blur(random_resize(out, size), sinc_kernel), opt['jpeg_range2'])
        else:
            out = blur(random_resize(self.jpeg(out, opt['jpeg_range2']), size), sinc_kernel)
        return torch.clamp((out * 255).round(), 0, 255) / 255, gt_usm, scale

    @torch.no_grad()
    def forward(self, gt, kernel1, kernel2, sinc_kernel):
        """A batch from the dataset -> dict: lq [B, 3, p, p]; gt and gt_usm windows [B, 3, q, q];
        coord, cell [B, q * q, 2]; scale s (p = lq_size, q = query_window)."""
        opt = self.opt
        if opt['bsrgan_prob'] and np.random.uniform() < opt['bsrgan_prob']:  # no draw at 0: seeded batches as before
            scale = random.uniform(*opt['scale_range'])
            gt_usm = self.usm_sharpener(gt)
            lq = self.bsrgan(gt_usm, scale)
        else:
            lq, gt_usm, scale = self.degrade(gt, kernel1, kernel2, sinc_kernel)
        lq, (gt, gt_usm), coord, cell = paired_window_crop(lq, [gt, gt_usm], self.opt['lq_size'],
                                                           self.opt['query_window'])
        return {'lq': lq, 'gt': gt, 'gt_usm': gt_usm, 'coord': coord, 'cell': cell, 'scale': scale}
