"""Integer pixel arrays <-> float image tensors: the one conversion between pictures and networks.

Pixels are numpy arrays [H, W, C] (or a batch [N, H, W, C]) of uint8 or uint16; images are float32 tensors
[N, C, H, W] in [0, 1], level / peak with peak = 255 (uint8) or 65535 (uint16). `to_pixels(to_tensor(x))[0]`
equals x for both depths. Datasets (BasicSR plugins) use BasicSR's `img2tensor` instead, as BasicSR's own do.
"""
import numpy as np
import torch

PEAKS = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}  # the level of 1.0 at each depth
BAND_SAMPLES = 2 ** 21  # `to_pixels` converts in bands of rows of about this many samples (8 MB of float32)


def peak_of(dtype):
    """255 for uint8, 65535 for uint16: the level that 1.0 maps to. TypeError for any other dtype."""
    try:
        dtype = np.dtype(dtype)
        return PEAKS[dtype]
    except (KeyError, TypeError):
        raise TypeError(f'pixels must be uint8 or uint16, got {dtype}') from None


def to_tensor(pixels, device=None):
    """Float32 image [1, C, H, W] of pixels [H, W, C] (or [N, C, H, W] of a batch [N, H, W, C]) in [0, 1].

    pixels: a numpy array of uint8 or uint16 (any strides); each level becomes level / 255 or level / 65535.
    The levels are converted to float32 on the CPU, the tensor moved to `device` (None: stays on the CPU) and
    divided there (in place), so the result is what `tensor.to(device) / peak` gives on that device (CUDA divides
    by a scalar as a product with its reciprocal). The result is a new contiguous tensor; the array is never
    shared. TypeError for another dtype, ValueError for another number of dimensions.
    """
    pixels = np.asarray(pixels)
    peak = peak_of(pixels.dtype)
    if pixels.ndim not in (3, 4):
        raise ValueError(f'pixels must be [H, W, C] or [N, H, W, C], got shape {pixels.shape}')
    batch = pixels if pixels.ndim == 4 else pixels[None]
    if not batch.flags.writeable or min(batch.strides) < 0:  # torch.from_numpy takes neither
        batch = batch.copy()
    image = torch.empty((batch.shape[0], batch.shape[3], *batch.shape[1:3]))
    image.copy_(torch.from_numpy(batch).permute(0, 3, 1, 2))
    return (image if device is None else image.to(device)).div_(peak)


def to_pixels(image, dtype=np.uint8, out=None):
    """Pixels [H, W, C] of an image [C, H, W] (or [N, H, W, C] of a batch [N, C, H, W]) in [0, 1]: a numpy array.

    image: a float tensor on any device (computed in float32). Each value is clamped to [0, 1], multiplied by the
    peak of `dtype` (uint8: 255, uint16: 65535) and rounded half to even (torch.round), on the image's device,
    then cast on the CPU: for uint8 exactly BasicSR's `tensor2img`. It works in bands of rows, so besides the
    result it holds about BAND_SAMPLES floats. out: an array to write into instead of a new one, of the result's
    shape (its channels may be C or, for C = 1, any number: the one channel is copied to each); its dtype is
    used and `dtype` ignored; returned. TypeError for a dtype other than uint8 or uint16, ValueError for an
    image that is not 3- or 4-dimensional, TypeError for one that is not a tensor.
    """
    if not torch.is_tensor(image):
        raise TypeError(f'image must be a torch.Tensor [C, H, W] or [N, C, H, W], got {type(image).__name__}')
    if image.dim() not in (3, 4):
        raise ValueError(f'image must be [C, H, W] or [N, C, H, W], got shape {tuple(image.shape)}')
    dtype = out.dtype if out is not None else dtype
    peak = peak_of(dtype)
    batch = image if image.dim() == 4 else image[None]
    n, c, h, w = batch.shape
    if out is None:
        out = np.empty((n, h, w, c) if image.dim() == 4 else (h, w, c), dtype)
    target = out if image.dim() == 4 else out[None]
    rows = max(1, BAND_SAMPLES // max(1, c * w))
    with torch.no_grad():
        for k in range(n):
            for top in range(0, h, rows):
                band = batch[k, :, top:top + rows].float().clamp(0, 1).mul_(peak).round_()
                target[k, top:top + rows] = band.permute(1, 2, 0).cpu().numpy()
    return out
