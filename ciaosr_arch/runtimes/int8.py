"""The opt-in int8 decode of the OpenVINO runtime: which layers it quantizes, their calibration, the fake quantization.

The products of the key and value nets after their first layer (86% of the decode's multiply-adds for
EDSR-baseline) take uint8 activations and int8 weights (`INT8_NETS`, `int8_layers`); the decoder imnet_q stays in
the caller's precision (in int8 it loses too much: a PyTorch simulation measured 36-66 dB against fp32 on RealSRSet
crops, x4, where the key and value nets alone gave 74-87 dB). Activation ranges are calibrated once per model
(`calibrate`) on the photo crops in CALIBRATION_DIR at CALIBRATION_SCALES (x1.5 decodes without the pair table, the
larger scales with it); `fake_quantized` expresses the quantization in torch ops that OpenVINO's converter turns
into uint8 x int8 products. Measured: 1.8x the bf16 decode (249 k against 140 k queries/s, x16, 64 x 64 tile), PSNR
against fp32 64.9-70.1 dB on RealSRSet crops at x4, 63.1-70.6 dB at x16.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..archs.coords import make_cell, make_coord
from .base import TorchRuntime, attach

if TYPE_CHECKING:  # the archs import the runtimes' base
    from ..archs.ciaosr_arch import CiaoSR

INT8_NETS = ('imnet_k', 'imnet_v')
CALIBRATION_DIR = Path(__file__).parent.parent / 'calibration'
CALIBRATION_SCALES = (1.5, 4, 16)
CALIBRATION_QUERIES = 8192  # queries decoded per calibration crop and scale (an even spread of the output pixels)


def int8_layers(net: CiaoSR) -> list[nn.Linear]:
    """The linear layers of `net` (a CiaoSR) that the int8 decode quantizes: each of INT8_NETS but its first layer."""
    return [layer for name in INT8_NETS for layer in getattr(net, name).layers[2::2]]


@torch.no_grad()
def calibrate(net: CiaoSR, folder: str | Path | None = None, scales: Sequence[float] = CALIBRATION_SCALES,
              queries: int = CALIBRATION_QUERIES) -> list[float]:
    """Largest input value of each of `int8_layers(net)` over PyTorch's fp32 decode of the RGB photo crops
    (*.png) in `folder` (default CALIBRATION_DIR) at each of `scales`, `queries` output pixels spread evenly over
    each output -> [float]. Their inputs follow a ReLU, so [0, largest] is their whole range. The decode runs on a
    `TorchRuntime` in the engine's CPU chunks; `net`'s own runtime is attached again afterwards. ValueError if a
    crop cannot be read or a layer never ran (no crops; or no scale < 2, where the key net's output layer runs)."""
    folder = Path(folder or CALIBRATION_DIR)
    layers, tops = int8_layers(net), {}
    hooks = [layer.register_forward_pre_hook(
        lambda module, args, i=i: tops.__setitem__(i, max(tops.get(i, 0.0), float(args[0].max())))
    ) for i, layer in enumerate(layers)]
    attached = net.runtime
    attach(net, TorchRuntime())
    chunk = net.runtime.chunk('cpu')  # bounds the activations as the engine's chunks do
    try:
        with torch.autocast('cpu', enabled=False):
            for path in sorted(folder.glob('*.png')):
                pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if pixels is None:
                    raise ValueError(f'cannot read the calibration crop {path}')
                pixels = np.ascontiguousarray(pixels[..., ::-1])
                lr = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None]
                for scale in scales:
                    size = (round(lr.shape[-2] * scale), round(lr.shape[-1] * scale))
                    coord = make_coord(size)
                    coord = coord[torch.linspace(0, len(coord) - 1, min(queries, len(coord))).long()][None]
                    bank = net.encode(lr, size)
                    for part in coord.split(chunk, 1):
                        net.decode(bank, part, make_cell(size, part.shape[1]))
    finally:
        attach(net, attached)
        for hook in hooks:
            hook.remove()
    if len(tops) < len(layers):
        raise ValueError(f'calibration in {folder} did not run every int8 layer (no crops, or no scale < 2?)')
    return [tops[i] for i in range(len(layers))]


@contextmanager
def fake_quantized(layers: Sequence[nn.Linear], tops: Sequence[float]) -> Iterator[None]:
    """Within the block, each nn.Linear of `layers` computes on its input quantized to uint8 over [0, top] and on its
    weights quantized to int8 (symmetric, per output channel), with torch's fake-quantize ops, which OpenVINO's
    converter turns into FakeQuantize nodes and its CPU plugin into uint8 x int8 products (VNNI). Each layer's
    own forward comes back when the block ends, however it ends."""
    before = [vars(layer).get('forward') for layer in layers]
    try:
        for layer, top in zip(layers, tops):
            step = max(top, 1e-6) / 255
            weight_step = layer.weight.detach().abs().amax(1).clamp_min(1e-12) / 127
            zero = torch.zeros(weight_step.shape, dtype=torch.int32)

            def forward(x, layer=layer, step=step, weight_step=weight_step, zero=zero):
                x = torch.fake_quantize_per_tensor_affine(x, step, 0, 0, 255)
                weight = torch.fake_quantize_per_channel_affine(layer.weight, weight_step, zero, 0, -127, 127)
                return F.linear(x, weight, layer.bias)
            vars(layer)['forward'] = forward  # an instance attribute, over the class's method
        yield
    finally:
        for layer, original in zip(layers, before):
            vars(layer).pop('forward', None)
            if original is not None:
                vars(layer)['forward'] = original
