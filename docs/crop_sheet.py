"""The 1:1 crop sheets of README's real-world section: bicubic, Real-ESRGAN x4plus (x8 = its x4 + Lanczos, as its
--outscale), then CiaoSR models, on faces, text, fur and grass of RealSRSet photos (bf16 autocast, one thread).

    .venv/bin/python docs/crop_sheet.py docs/real_v4_sheet_x4.png 4 "real v4=real" [NAME=MODEL ...]

Each crop is upscaled with a 16-px LR margin of context and cut out, so it shows what the whole photo's output
shows there (no tile border). MODEL: a shipped name or a checkpoint path.
"""
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from ciaosr.other_upscalers import FixedScaleUpscaler
from ciaosr_arch import load_model, super_resolve
from ciaosr_arch.image import to_pixels, to_tensor

SHARED = Path(__file__).resolve().parents[2] / 'shared'

out_path, scale = sys.argv[1], int(sys.argv[2])
models = [a.split('=', 1) for a in sys.argv[3:]]
SIDE = 192 // scale  # LR crop side: 48 at x4, 24 at x8
MARGIN = 16
# (photo, LR centre x, y, what)
CROPS = [('oldphoto6', 164, 145, 'face'), ('foreman', 120, 40, 'face'), ('ppt3', 45, 195, 'text'),
         ('tiger', 211, 202, 'fur'), ('tiger', 30, 320, 'grass'), ('dog', 70, 120, 'fur, noise')]
torch.set_num_threads(1)
re = FixedScaleUpscaler(SHARED / 'models' / 'RealESRGAN_x4plus.safetensors')
nets = [(name, load_model(path).eval()) for name, path in models]  # a shipped name or a path
rows = []
font = cv2.FONT_HERSHEY_SIMPLEX
for photo, cx, cy, what in CROPS:
    img = cv2.cvtColor(cv2.imread(str(SHARED / 'data' / 'RealSRSet' / f'{photo}.png')), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    x0, y0 = min(max(cx - SIDE // 2, 0), w - SIDE), min(max(cy - SIDE // 2, 0), h - SIDE)
    ax0, ay0 = max(x0 - MARGIN, 0), max(y0 - MARGIN, 0)
    ax1, ay1 = min(x0 + SIDE + MARGIN, w), min(y0 + SIDE + MARGIN, h)
    ctx = np.ascontiguousarray(img[ay0:ay1, ax0:ax1])
    size = ((ay1 - ay0) * scale, (ax1 - ax0) * scale)
    ox, oy = (x0 - ax0) * scale, (y0 - ay0) * scale

    window = (slice(oy, oy + SIDE * scale), slice(ox, ox + SIDE * scale))
    outputs = [cv2.resize(ctx, size[::-1], interpolation=cv2.INTER_CUBIC), re(ctx, size)]
    lr = to_tensor(ctx)
    for _, net in nets:
        with torch.autocast('cpu', torch.bfloat16):
            outputs.append(to_pixels(super_resolve(net, lr, size=size)[0]))
    cells = [output[window] for output in outputs]
    label = np.full((18, len(cells) * (SIDE * scale + 4), 3), 255, np.uint8)
    cv2.putText(label, f'{photo} ({what}) x{scale}, LR crop {SIDE}px at ({x0},{y0})', (2, 13), font, 0.4, (0, 0, 0), 1)
    rows += [label, np.hstack([np.pad(c, ((0, 4), (0, 4), (0, 0)), constant_values=255) for c in cells])]
head = np.full((18, rows[1].shape[1], 3), 255, np.uint8)
for i, name in enumerate(['bicubic', 'Real-ESRGAN x4plus'] + [n for n, _ in models]):
    cv2.putText(head, name, (i * (SIDE * scale + 4) + 2, 13), font, 0.4, (0, 0, 0), 1)
cv2.imwrite(out_path, cv2.cvtColor(np.vstack([head] + rows), cv2.COLOR_RGB2BGR))
print(out_path)
