"""Temporal flicker of frame-by-frame upscaling, measured on a clip with known motion.

    python -m ciaosr.flicker --model default --photo PHOTO.png

A window panned across a real photo by whole LR pixels makes a clip whose true motion is known: the upscaled
frame t + 1 should equal the upscaled frame t shifted by `shift * scale` output pixels, away from the borders
(there the window's content changed). The mean absolute difference between the two, in 8-bit levels, is the
flicker: 0 for an upscaler that treats every position alike (bicubic is, up to the borders), more for a network
whose texture depends on where in the input a pixel sits (GAN texture), as a video player would show it.
"""
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ciaosr_arch import load_model, super_resolve
from ciaosr_arch.engine import Net
from ciaosr_arch.image import to_pixels, to_tensor

from . import image_io
from .cli import OneLineParser


def pan_frames(photo: np.ndarray, size: int, count: int, shift: int = 1) -> list[np.ndarray]:
    """`count` crops [size, size, C] of photo [H, W, C], the window moving right by `shift` pixels a frame (the
    content moves left). ValueError if the photo is too small for the pan."""
    h, w = photo.shape[:2]
    if size > h or size + shift * (count - 1) > w:
        raise ValueError(f'a {w}x{h} photo is too small for {count} crops of {size} pixels panned by {shift}')
    return [photo[:size, k * shift:k * shift + size] for k in range(count)]


def flicker(frames: Sequence[np.ndarray], step: int, margin: int) -> float:
    """Mean absolute difference in levels between consecutive frames [H, W, C] (uint8) of a clip panned left by
    `step` output pixels a frame, after undoing that motion, leaving `margin` pixels at each border: float."""
    diffs = []
    for previous, current in zip(frames, frames[1:]):
        ahead = previous[margin:-margin, step + margin:-margin].astype(np.int16)  # what moved `step` to the left
        now = current[margin:-margin, margin:-margin - step].astype(np.int16)
        diffs.append(np.abs(ahead - now).mean())
    return float(np.mean(diffs))


def upscale_clip(net: Net, frames: Sequence[np.ndarray], scale: float) -> list[np.ndarray]:
    """Each frame [h, w, 3] uint8 upscaled by the network (whole, fp32) to round(scale * side): [H, W, 3] uint8."""
    outputs = []
    for frame in frames:
        size = (round(frame.shape[0] * scale), round(frame.shape[1] * scale))
        with torch.no_grad():
            sr = super_resolve(net, to_tensor(frame), size=size)
        outputs.append(to_pixels(sr[0]))
    return outputs


def main(argv: Sequence[str] | None = None) -> None:
    parser = OneLineParser(description='Flicker of frame-by-frame upscaling on a clip panned by LR pixels')
    parser.add_argument('--photo', required=True, help='a real photo to pan across')
    parser.add_argument('--model', default='default', help='a shipped model name or a checkpoint')
    parser.add_argument('--scale', type=int, default=4, help='integer scale (default 4)')
    parser.add_argument('--size', type=int, default=64, help='LR crop side (default 64)')
    parser.add_argument('--frames', type=int, default=6, help='frames in the clip (default 6)')
    args = parser.parse_args(argv)
    photo = image_io.as_rgb(image_io.read_image(args.photo).pixels)
    frames = pan_frames(photo, args.size, args.frames)
    net = load_model(args.model)
    margin = 4 * args.scale
    bicubic = [np.asarray(Image.fromarray(f).resize((args.size * args.scale,) * 2, Image.Resampling.BICUBIC))
               for f in frames]
    print(f'{args.model}: {flicker(upscale_clip(net, frames, args.scale), args.scale, margin):.3f} levels; bicubic '
          f'{flicker(bicubic, args.scale, margin):.3f} ({args.frames} frames of {args.size}x{args.size} at '
          f'x{args.scale}, {margin}-pixel border left out)')


if __name__ == '__main__':
    main()
