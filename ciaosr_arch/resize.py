"""Bicubic down-sampling to an exact size: PIL (official CiaoSR training) and MATLAB `imresize`.

MATLAB-style resizing reuses BasicSR's `calculate_weights_indices` (antialiased cubic kernel,
symmetric border) but applies it as one [out, in] matrix per axis, so any output size works
(BasicSR's `imresize` only takes a scale and rounds the size up).
"""
import numpy as np
from basicsr.utils.matlab_functions import calculate_weights_indices
from PIL import Image


def resize_pil(img, size):
    """PIL bicubic (antialiased) resize of a uint8 HxWxC array to size (H, W); uint8 out."""
    return np.array(Image.fromarray(img).resize((size[1], size[0]), Image.Resampling.BICUBIC))


def matlab_resize_matrix(in_length, out_length):
    """[out, in] float64 matrix of MATLAB's bicubic imresize along one axis (antialiased)."""
    weights, indices, sym_start, _ = calculate_weights_indices(
        in_length, out_length, out_length / in_length, 'cubic', 4, True)
    source = indices.long().numpy() - sym_start  # index into the unpadded signal, may lie outside
    source = np.where(source < 0, -source - 1, source)  # symmetric padding, as MATLAB
    source = np.where(source >= in_length, 2 * in_length - 1 - source, source)
    matrix = np.zeros((out_length, in_length))
    np.add.at(matrix, (np.arange(out_length)[:, None], source), weights.double().numpy())
    return matrix


def resize_matlab(img, size):
    """MATLAB bicubic imresize of an HxW(xC) float array (any range) to size (H, W); float64 out."""
    rows = matlab_resize_matrix(img.shape[0], size[0])
    cols = matlab_resize_matrix(img.shape[1], size[1])
    return np.einsum('oh,hw...,pw->op...', rows, img.astype(np.float64), cols, optimize=True)


def downsample(img, size, method):
    """uint8 HxWx3 -> uint8 LR of `size` by 'pil' (official training) or 'matlab' bicubic."""
    if method == 'pil':
        return resize_pil(img, size)
    if method == 'matlab':
        return np.clip(np.round(resize_matlab(img, size)), 0, 255).astype(np.uint8)
    raise ValueError(f"downsample must be 'pil' or 'matlab', got {method!r}")
