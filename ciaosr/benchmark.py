"""Full-reference benchmark (PSNR / SSIM, optional LPIPS) in the layout of the CiaoSR paper's Tables 2-3.

    ciaosr-benchmark --model PATH|bicubic|default [--model ...] --data-root DIR \\
        --datasets Set5 Set14 B100 Urban100 Manga109 --scales 2 3 4 6 8 12 --json OUT.json --markdown OUT.md

Protocol (`ciaosr_arch.evaluation`): LR = MATLAB bicubic down-sampling of the HR image (LIIF's floor/round crop),
rounded to 8 bits; SR rounded to 8 bits; PSNR/SSIM on Y with shave = ceil(scale), or `--rgb-shave6` (DIV2K: RGB,
shave ceil(scale) + 6); single-channel HR images are scored on their gray intensity. The Bicubic row (MATLAB bicubic
up-sampling of the LR) is always included. Models run through `super_resolve`, by default in the official test-time
tiling (192 px LR tiles, 32 px overlap, uniform averaging), since the non-local attention is quadratic in LR area.
Images are listed and read by `ciaosr.image_io` (hidden files skipped, 16-bit samples rounded to 8 bits); an image
that cannot be read, or is too small for a scale, is named and left out; a metric that cannot be computed is null in
the JSON, with the reason. Every record also carries the LR-grid index and phase profile of the outputs
(`ciaosr.grid_index`, integer scales).

`--degradation realesrgan` scores real-world upscaling instead: the LR is made from the HR by Real-ESRGAN's
second-order degradations (`realsr.degradations`, the training pipeline), seeded per image and scale, and the
outputs are scored against the plain HR. `--model` also takes any fixed-scale network spandrel loads (Real-ESRGAN
x4plus, ...), run as Real-ESRGAN's `--outscale` does; `--lpips` uses the `lpips` package (AlexNet). Tiles blend
smoothly there (`--blend smooth`, the tools' tiling) unless told.
"""
import argparse
import itertools
import json
import math
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ciaosr_arch.engine import MIN_TILE, Net
from ciaosr_arch.evaluation import (
    benchmark_pair,
    bicubic_upsample,
    lr_size,
    psnr_ssim,
    scale_label,
    shave,
    to_rgb,
)
from ciaosr_arch.image import to_pixels, to_tensor
from ciaosr_arch.shipped import SHIPPED_MODELS
from realsr.degradations import (
    KERNEL_DEFAULTS,
    KERNEL_PAD_TO,
    SYNTHESIS_DEFAULTS,
    RealPairSynthesis,
    blur_kernel,
    final_sinc_kernel,
)

from . import cli, image_io
from .iqa import LPIPS_FILE, MetricUnavailable, create_lpips
from .other_upscalers import TILE_PAD, FixedScaleUpscaler
from .reporting import grid_result, load_network, profile_line, table_lines, upscale_tensor

DATASETS = ('Set5', 'Set14', 'B100', 'Urban100', 'Manga109')
# The default model's largest trained scale (LIIF's too: same recipe); larger scales are out-of-scale
MAX_IN_SCALE = SHIPPED_MODELS['default'].scales[1]
METRIC_FORMATS = {'psnr': ('PSNR (dB)', '{:.2f}'), 'ssim': ('SSIM', '{:.4f}'), 'lpips': ('LPIPS', '{:.4f}'),
                  'grid': ('LR-grid index', '{:.3f}')}
Method = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]  # upscale(lr [1, 3, h, w], (H, W)) -> [1, 3, H, W]
SSIM_WINDOW = 11  # BasicSR's SSIM keeps only the pixels where its 11x11 Gaussian window fits


def dataset_images(data_root: str | Path, dataset: str, limit: int | None = None) -> list[Path]:
    """Image files of data_root/dataset (`image_io.list_images`: hidden files skipped), sorted by name (the first
    `limit` ones); FileNotFoundError if the folder is missing or holds no images."""
    folder = Path(data_root) / dataset
    files = image_io.list_images(folder) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f'no images in {folder}')
    return files[:limit]


def load_hr(path: str | Path) -> np.ndarray:
    """uint8 HR image of a file read by `image_io.read_image`: [H, W] for gray files (scored as gray, see
    evaluation), else [H, W, 3] RGB; 16-bit samples are rounded to 8 bits and alpha is dropped.
    ImageReadError (one line) if the file cannot be read."""
    picture = image_io.read_image(path)
    rgb = image_io.as_rgb(picture.pixels)
    return np.ascontiguousarray(rgb[..., 0]) if picture.is_gray else rgb


def too_small(hr_size: tuple[int, int], scale: float, rgb_shave6: bool = False,
              min_sides: tuple[int, int] = (1, 1)) -> str | None:
    """Why an HR image of hr_size (H, W) cannot be scored at `scale`, or None: its cropped HR or its LR would be
    smaller than min_sides (HR, LR) px per side (1: not empty), or what is left of the cropped HR after the shave
    has no room for SSIM's window."""
    lr_side = min(lr_size(hr_size, scale))
    hr_side = min(round(side * scale) for side in lr_size(hr_size, scale))
    if lr_side < min_sides[1] or hr_side < min_sides[0]:
        return (f'{hr_size[1]}x{hr_size[0]} has an empty LR at {scale_label(scale)}' if lr_side < 1 else
                f'{hr_size[1]}x{hr_size[0]} is too small at {scale_label(scale)}: the LR pipeline needs at least '
                f'{min_sides[0]} HR and {min_sides[1]} LR px per side')
    border = shave(scale, rgb_shave6)
    left = min(round(side * scale) for side in lr_size(hr_size, scale)) - 2 * border
    if left < SSIM_WINDOW:
        return (f'{hr_size[1]}x{hr_size[0]} leaves {max(left, 0)} pixels per side after the {border}-pixel shave at '
                f'{scale_label(scale)}, fewer than the {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window')
    return None


def upscale_model(net: Net, lr: torch.Tensor, size: tuple[int, int], device: torch.device,
                  dtype: torch.dtype | None = None, **tiling: Any) -> torch.Tensor:
    """A CiaoSR/LIIF network's output [1, 3, H, W] in [0, 1] for lr [1, 3, h, w].

    Tiled up to x4 only, as the official test configs (larger scales run on the whole LR image);
    `dtype`: autocast precision (None: float32; bfloat16 is about 2x faster on CPUs with bf16 instructions).
    """
    if size[0] / lr.shape[-2] > MAX_IN_SCALE + 1e-6:
        tiling = {**tiling, 'tile': 0}
    return upscale_tensor(net, lr, size, device, dtype, **tiling)


def upscale_fixed(upscaler: FixedScaleUpscaler, lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A `FixedScaleUpscaler`'s output [1, 3, H, W] in [0, 1] (8-bit levels) for lr [1, 3, h, w] at 8-bit levels:
    the network at its native scale, its 8-bit output resized to `size` with Lanczos4 (Real-ESRGAN's --outscale)."""
    return to_tensor(upscaler(to_pixels(lr[0]), size))


def load_methods(args: argparse.Namespace, device: torch.device,
                 dtype: torch.dtype | None = None) -> dict[str, Method]:
    """{name: upscale(lr, size)}: bicubic first, then each --model (`cli.model_specs`, `reporting.load_network`):
    shipped names and CiaoSR/LIIF checkpoints (autocast to `dtype`, None: float32), or fixed-scale networks spandrel
    loads (fp32, `--tile` LR tiles with TILE_PAD px of context). UsageError for --name that does not fit --model;
    CheckpointError / UpscalerError (one line) for a file neither can use."""
    methods: dict[str, Method] = {cli.BICUBIC: bicubic_upsample}
    tiling = {'tile': args.tile, 'tile_overlap': args.tile_overlap, 'blend': args.blend, 'dtype': dtype}
    for name, spec in cli.model_specs(args).items():
        network = load_network(spec, device, args.tile, TILE_PAD)
        methods[name] = (partial(upscale_fixed, network) if isinstance(network, FixedScaleUpscaler) else
                         partial(upscale_model, network, device=device, **tiling))
    return methods


def degradation_seed(seed: int, name: str, scale: float) -> int:
    """The RNG seed of one image's degradation at one scale: `seed` plus the CRC-32 of 'name xSCALE', mod 2**32, so
    an image's LR depends only on the seed, its name and the scale (not on the methods or the other images)."""
    return (seed + zlib.crc32(f'{name} {scale_label(scale)}'.encode())) % 2**32


def crop_to_lr_grid(hr: np.ndarray, scale: float) -> np.ndarray:
    """The top-left round(h * scale) x round(w * scale) of hr [H, W(, 3)], (h, w) = `lr_size` (LIIF's crop rule, as
    `benchmark_pair`). ValueError if the LR would be empty."""
    h, w = lr_size(hr.shape[:2], scale)
    if min(h, w) < 1:
        raise ValueError(f'HR image {hr.shape[1]}x{hr.shape[0]} is too small for scale {scale}')
    return hr[:round(h * scale), :round(w * scale)]


REALESRGAN_MIN_LR = KERNEL_PAD_TO // 2 + 1  # filter2D reflect-pads 21x21 kernels by 10 px: the final LR size
# (HR, LR) sides: the first resize may shrink the HR by resize_range[0] (0.15) before the second blur
REALESRGAN_MIN_SIDES = (math.ceil(REALESRGAN_MIN_LR / SYNTHESIS_DEFAULTS['resize_range'][0]), REALESRGAN_MIN_LR)


def realesrgan_pair(hr: np.ndarray, scale: float, name: str, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """(LR float [1, 3, h, w] in [0, 1] at 8-bit levels, HR uint8 [H', W'(, 3)] cropped) of an HR image degraded by
    Real-ESRGAN's second-order pipeline, as in training (`realsr.degradations`).

    hr: uint8 [H, W, 3] RGB or [H, W] gray (degraded as RGB, returned single-channel); cropped as
    `benchmark_pair` (LIIF's rule), so the LR is (h, w) = `lr_size`. Python's `random`, NumPy and torch are
    seeded with `degradation_seed(seed, name, scale)` (BasicSR's `set_random_seed`) before the kernels
    (`blur_kernel`, `final_sinc_kernel` with KERNEL_DEFAULTS) and `RealPairSynthesis.degrade` (default options)
    are drawn, so the same (seed, name, scale) always gives the same LR. The pipeline's
    unsharp-masked GT is not returned: scores are against the plain HR. ValueError if the cropped HR or the LR
    would be smaller than REALESRGAN_MIN_SIDES (HR, LR) px per side (the pipeline's filters need them).
    """
    from basicsr.utils import set_random_seed  # after ciaosr_arch's basicsr fix

    h, w = lr_size(hr.shape[:2], scale)
    cropped = crop_to_lr_grid(hr, scale)
    if min(cropped.shape[:2]) < REALESRGAN_MIN_SIDES[0] or min(h, w) < REALESRGAN_MIN_SIDES[1]:
        raise ValueError(f'HR image {hr.shape[1]}x{hr.shape[0]} is too small for the Real-ESRGAN pipeline at '
                         f'{scale_label(scale)}: it needs at least {REALESRGAN_MIN_SIDES[0]} HR (cropped to a '
                         f'multiple of the scale) and {REALESRGAN_MIN_SIDES[1]} LR px per side')
    hr = cropped
    set_random_seed(degradation_seed(seed, name, scale))
    kernels = (blur_kernel(KERNEL_DEFAULTS), blur_kernel(KERNEL_DEFAULTS, '2'),
               final_sinc_kernel(KERNEL_DEFAULTS['final_sinc_prob']))
    lr, _, _ = RealPairSynthesis().degrade(to_tensor(to_rgb(hr)), *(k[None] for k in kernels), scale=scale)
    return lr, hr


def bsrgan_pair(hr: np.ndarray, scale: float, name: str, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """(LR float [1, 3, h, w] in [0, 1] at 8-bit levels, HR uint8 [H', W'(, 3)] cropped) of an HR image degraded by
    BSRGAN's degradation model (`realsr.bsrgan.bsrgan_degrade`, seeded with `degradation_seed(seed, name, scale)`;
    the global generators are left as they were). hr and the crop as `realesrgan_pair`; ValueError if the LR would
    be empty or scale < 1.
    """
    from realsr.bsrgan import bsrgan_degrade

    hr = crop_to_lr_grid(hr, scale)
    return bsrgan_degrade(to_tensor(to_rgb(hr)), scale, seed=degradation_seed(seed, name, scale)), hr


@dataclass(frozen=True)
class Degradation:
    """How `evaluate` makes LR images: make_pair(hr, scale, name) -> (LR, cropped HR) as `benchmark_pair` (name:
    'dataset/file name', e.g. to seed it), described in reports by `description`; images whose cropped HR or LR
    would be smaller than min_sides (HR, LR) px per side are left out."""

    make_pair: Callable[..., tuple[torch.Tensor, np.ndarray]]  # (hr, scale, name) -> (LR, cropped HR)
    description: str
    min_sides: tuple[int, int] = (1, 1)


# --degradation NAME -> its pipeline (the seed is bound in `run`); a new one is an entry whose maker has
# realesrgan_pair's signature and contract.
DEGRADATIONS = {
    'realesrgan': Degradation(realesrgan_pair, "Real-ESRGAN's second-order degradations (realsr.degradations, the "
                                               'training pipeline; kernels and RealPairSynthesis defaults)',
                              REALESRGAN_MIN_SIDES),
    'bsrgan': Degradation(bsrgan_pair, "BSRGAN's degradation model (realsr.bsrgan, shuffled blur / down-sampling / "
                                       'noise / JPEG / camera noise)'),
}


def lpips_score(metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sr: np.ndarray, hr: np.ndarray,
                border: int) -> float:
    """LPIPS of uint8 sr against hr (RGB; gray hr copied to RGB) without `border` pixels per side."""
    a, b = (to_tensor(to_rgb(img)[border:-border, border:-border]) for img in (sr, hr))
    return metric(a, b).item()


def bicubic_pair(hr: np.ndarray, scale: float, name: str,
                 downsample: str = 'matlab') -> tuple[torch.Tensor, np.ndarray]:
    """`benchmark_pair` with the pair-maker signature of `evaluate` (the name is not used: no randomness)."""
    return benchmark_pair(hr, scale, downsample)


def grid_values(sr: np.ndarray, scale: float) -> dict[str, Any]:
    """{'grid': LR-grid index, 'grid_profile': phase profile} of a uint8 [H, W, 3] output (`grid_index`), or
    {'grid': None, 'grid_unavailable': why} (not an integer scale, a flat output)."""
    index, why, profile = grid_result(sr, scale)
    return {'grid': index, 'grid_profile': profile} if why is None else {'grid': None, 'grid_unavailable': why}


def evaluate(methods: dict[str, Method], images: dict[str, list[Path]], scales: Sequence[float],
             lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None, rgb_shave6: bool = False,
             degradation: Degradation | None = None,
             save_lr: str | Path | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """(records, left out): records {method, dataset, scale, psnr, ssim (, lpips), grid, grid_profile, n_images,
    seconds} with the means over each dataset's images, and a line per image left out.

    images: {dataset: [HR image paths]}; lpips: `iqa.create_lpips` or None; seconds: upscaling + scoring time;
    grid: mean LR-grid index, grid_profile: mean phase profile (`grid_values`; None at non-integer scales).
    degradation: how LRs are made (a `Degradation`; default: `benchmark_pair` with MATLAB bicubic); save_lr: folder
    where each LR is written as save_lr/dataset/xSCALE/stem.png.
    Every file's header is checked before any work: a file that cannot be read is left out (so is one that turns
    out damaged when it is decoded), and so is an image too small for a scale (`too_small`), at that scale; each
    is named on stderr. A metric that cannot be computed for an image (the model's output is not finite;
    PSNR is infinite where SR equals HR) makes the record's value None, with the reason in METRIC_unavailable.
    """
    left_out = []

    def leave_out(line):
        left_out.append(line)
        tqdm.write(f'left out: {line}', file=sys.stderr)

    degradation = degradation or Degradation(bicubic_pair, 'MATLAB bicubic')
    work = {}  # path -> the scales it is scored at
    for path in itertools.chain(*images.values()):
        try:
            info = image_io.probe_image(path)
        except image_io.ImageReadError as err:
            leave_out(f'{path}: {err}')
            continue
        work[path] = []
        for scale in scales:
            problem = too_small((info.height, info.width), scale, rgb_shave6, degradation.min_sides)
            if problem:
                leave_out(f'{path} at {scale_label(scale)}: {problem}')
            else:
                work[path].append(scale)
    metrics = ('psnr', 'ssim') + (('lpips',) if lpips is not None else ()) + ('grid',)
    scores, seconds = {}, {}
    progress = tqdm(total=sum(map(len, work.values())), unit='img', desc='benchmark')
    for dataset, paths in images.items():
        progress.set_postfix_str(dataset)
        for path in (p for p in paths if work.get(p)):
            try:
                img = load_hr(path)
            except image_io.ImageReadError as err:
                leave_out(f'{path}: {err}')
                progress.update(len(work[path]))
                continue
            for scale in work[path]:
                lr, hr = degradation.make_pair(img, scale, f'{dataset}/{path.name}')
                if save_lr:
                    folder = Path(save_lr) / dataset / scale_label(scale)
                    folder.mkdir(parents=True, exist_ok=True)
                    image_io.write_atomic(folder / f'{path.stem}.png',
                                          image_io.encode_image(image_io.Picture(to_pixels(lr[0])), 'png'))
                for method, upscale in methods.items():
                    start = time.perf_counter()
                    sr = upscale(lr, hr.shape[:2])
                    if torch.isfinite(sr).all():
                        sr = to_pixels(sr[0])
                        values: dict[str, Any] = dict(zip(('psnr', 'ssim'), psnr_ssim(sr, hr, scale, rgb_shave6)))
                        if lpips is not None:
                            values['lpips'] = lpips_score(lpips, sr, hr, shave(scale, rgb_shave6))
                        values.update(grid_values(sr, scale))
                    else:
                        values = dict.fromkeys(metrics)
                    key = method, dataset, scale
                    scores.setdefault(key, []).append((path.name, values))
                    seconds[key] = seconds.get(key, 0) + time.perf_counter() - start
                progress.update()
    progress.close()
    records = []
    for method, dataset, scale in itertools.product(methods, images, scales):
        per_image = scores.get((method, dataset, scale), [])
        profiles = [v['grid_profile'] for _, v in per_image if v.get('grid') is not None]
        records.append({'method': method, 'dataset': dataset, 'scale': scale,
                        **summarise(per_image, metrics, f'no image of {dataset} can be scored at {scale_label(scale)}'),
                        'grid_profile': np.mean(profiles, axis=0).tolist() if profiles else None,
                        'n_images': len(per_image), 'seconds': round(seconds.get((method, dataset, scale), 0), 2)})
    return records, left_out


def summarise(per_image: Sequence[tuple[str, dict[str, Any]]], metrics: Iterable[str], nothing: str) -> dict[str, Any]:
    """{metric: mean} of [(image name, {metric: value or None})]; a metric that is None or not finite for some
    image is None, with the reason under 'METRIC_unavailable': the image's own 'METRIC_unavailable' if it has one,
    `nothing` when there are no images."""
    summary = {}
    for metric in metrics:
        values = [(name, v[metric]) for name, v in per_image]
        failed = [name for name, value in values if value is None or not math.isfinite(value)]
        if values and not failed:
            summary[metric] = float(np.mean([value for _, value in values]))
            continue
        summary[metric] = None
        if not values:
            summary[f'{metric}_unavailable'] = nothing
            continue
        value, reason = dict(values)[failed[0]], dict(per_image)[failed[0]].get(f'{metric}_unavailable')
        why = (reason if reason else 'the model output is not finite' if value is None else
               'SR equals HR (infinite PSNR)' if value == math.inf else f'the value is {value}')
        summary[f'{metric}_unavailable'] = f'{why} for {", ".join(failed)}'
    return summary


def markdown_table(records: Sequence[dict[str, Any]], metric: str, methods: Sequence[str], datasets: Sequence[str],
                   scales: Sequence[float]) -> list[str]:
    """Tables 2-3 layout: one row per method, columns dataset x scale; out-of-scale columns marked with *."""
    label, fmt = METRIC_FORMATS[metric]
    cells = {(r['method'], r['dataset'], r['scale']): r[metric] for r in records}
    columns = [(d, s) for d in datasets for s in scales]
    header = ['Method'] + [f'{d} {scale_label(s)}' + ('*' if s > MAX_IN_SCALE else '') for d, s in columns]
    rows = [[method] + ['-' if cells.get((method, *c)) is None else fmt.format(cells[method, *c]) for c in columns]
            for method in methods]
    return [f'### {label}', ''] + table_lines(header, rows)


def markdown(records: Sequence[dict[str, Any]], methods: Sequence[str], datasets: Sequence[str],
             scales: Sequence[float], settings: dict[str, str], left_out: Sequence[str] = ()) -> str:
    """The report: settings, one Tables 2-3 style table per metric, the metrics that could not be computed and the
    images left out (lines of `evaluate`)."""
    n_images = {}
    for r in records:
        n_images[r['dataset']] = max(n_images.get(r['dataset'], 0), r['n_images'])
    counts = [f'{d} ({n_images[d]} image{"s" * (n_images[d] != 1)})' for d in datasets]
    lines = ['# Full-reference benchmark', '',
             f'Data: `{settings["data_root"]}`: {", ".join(counts)}.',
             f'Protocol: {settings["protocol"]}.',
             f'In-scale: x{MAX_IN_SCALE} and below (the training range of the paper\'s models and of `default`); * '
             'out-of-scale.',
             f'Models: {settings["tiling"]}.', '']
    metrics = ['psnr', 'ssim'] + (['lpips'] if any(r.get('lpips') is not None for r in records) else []) + ['grid']
    for metric in metrics:
        lines += markdown_table(records, metric, methods, datasets, scales) + ['']
    lines += ['LR-grid index: the largest deviation of the phase profile from its neighbours (0: smooth, s: all '
              'detail on LR pixel boundaries; `ciaosr.grid_index`). Mean phase profiles (phase 0 = the first '
              'output pixel of an LR pixel):', '']
    lines += [profile_line(f'{r["method"]} {r["dataset"]} {scale_label(r["scale"])}', r['grid_profile'])
              for r in records if r['grid_profile']] + ['']
    unavailable = {}
    for r in records:
        for metric in METRIC_FORMATS:
            if f'{metric}_unavailable' in r:
                unavailable.setdefault((metric, r[f'{metric}_unavailable']), []).append(
                    f'{r["method"]} {r["dataset"]} {scale_label(r["scale"])}')
    for (metric, reason), where in unavailable.items():
        label = METRIC_FORMATS[metric][0].split()[0]
        lines.append(f'{label} unavailable ({"everywhere" if len(where) == len(records) else ", ".join(where)}): '
                     f'{reason}')
    lines += [f'Left out: {line}' for line in left_out]
    return '\n'.join(lines).rstrip() + '\n'


def plot(records: Sequence[dict[str, Any]], methods: Sequence[str], datasets: Sequence[str], scales: Sequence[float],
         path: str | Path) -> None:
    """PSNR vs scale, one panel per dataset, one line per method; the in-scale range shaded (needs matplotlib)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.6), squeeze=False)
    psnr = {(r['method'], r['dataset'], r['scale']): r['psnr'] for r in records}
    for ax, dataset in zip(axes[0], datasets):
        for method in methods:
            ax.plot(scales, [math.nan if psnr[method, dataset, s] is None else psnr[method, dataset, s]
                             for s in scales], marker='o', label=method)
        if min(scales) <= MAX_IN_SCALE:
            ax.axvspan(min(scales), min(MAX_IN_SCALE, max(scales)), color='0.93', zorder=0)
        ax.set(title=dataset, xlabel='scale', xticks=scales, xticklabels=[scale_label(s) for s in scales])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel('PSNR (dB)')
    axes[0][-1].legend(fontsize='small')
    fig.suptitle(f'PSNR vs scale (shaded: in-scale, up to x{MAX_IN_SCALE})', fontsize='medium')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli.OneLineParser(description=(__doc__ or '').split('\n\n')[0])
    cli.add_model_options(parser, ' (the bicubic row is always included)')
    parser.add_argument('--data-root', default='../shared/data',
                        help='folder with one sub-folder of HR images per dataset (default: ../shared/data, '
                             'relative to the working directory)')
    parser.add_argument('--datasets', nargs='+', default=list(DATASETS),
                        help=f'benchmark sets under --data-root (default: {" ".join(DATASETS)})')
    parser.add_argument('--scales', type=cli.scale_arg, nargs='+', default=[2, 3, 4, 6, 8, 12],
                        help='scales, any number > 1 (>= 1 with --degradation; default: 2 3 4 6 8 12)')
    parser.add_argument('--limit', type=cli.at_least(1),
                        help='only the first N images (sorted by name) of each dataset')
    parser.add_argument('--rgb-shave6', action='store_true', help='DIV2K protocol: RGB, shave ceil(scale) + 6')
    parser.add_argument('--downsample', choices=('matlab', 'pil'),
                        help='how the bicubic protocol makes LR from HR (default: matlab)')
    parser.add_argument('--degradation', choices=list(DEGRADATIONS),
                        help='real-world mode: LR made by this degradation pipeline (seeded per image and scale), '
                             'outputs scored against the plain HR; default: the bicubic protocol')
    parser.add_argument('--seed', type=int, help='base seed of --degradation (default 0)')
    parser.add_argument('--save-lr', metavar='DIR', help='write every LR image to DIR/dataset/xSCALE/NAME.png')
    parser.add_argument('--tile', type=int, default=192,
                        help=f'LR tile side for the models, 0 (whole image) or at least {MIN_TILE}')
    parser.add_argument('--tile-overlap', type=int, default=32,
                        help='LR pixels shared by neighbouring tiles, at most half the tile (default 32)')
    parser.add_argument('--blend', choices=('uniform', 'smooth'),
                        help="tile blending: 'uniform' = the official test-time tiling (square tiles averaged; the "
                             "default of the bicubic protocol), 'smooth' = the tools' (the default of --degradation)")
    parser.add_argument('--lpips', action='store_true',
                        help='add LPIPS v0.1 (AlexNet) of the lpips package; recorded as unavailable without weights')
    parser.add_argument('--iqa-weights', help=f'folder with {LPIPS_FILE}, read without downloading anything '
                        "(default: the lpips package's own weights, AlexNet from torchvision's cache or downloaded)")
    parser.add_argument('--json', help='write the records here')
    parser.add_argument('--markdown', help='write the tables here')
    parser.add_argument('--plot', help='write the PSNR-vs-scale plot (PNG) here')
    cli.add_device_options(parser)  # --bf16: faster on CPUs with bf16 instructions; PSNR within about 0.01 dB on Set5
    args = parser.parse_args(argv)
    if args.degradation and (args.downsample or args.rgb_shave6):
        parser.error('--downsample and --rgb-shave6 belong to the bicubic protocol, not to --degradation')
    if args.seed is not None and not args.degradation:
        parser.error('--seed belongs to --degradation (the bicubic protocol has no randomness)')
    if args.degradation and min(args.scales) < 1:
        parser.error('--degradation makes LR images: scales must be at least 1')
    if not args.degradation and min(args.scales) <= 1:
        parser.error(f'the bicubic protocol downscales the HR images: scales must be above 1, got {min(args.scales):g}')
    if args.iqa_weights is not None and not Path(args.iqa_weights).is_dir():
        parser.error(f'--iqa-weights: no such folder: {args.iqa_weights}')
    args.seed = args.seed or 0
    # No official protocol for real-world degradations: the tools' tiling there. Uniform blending averages whole
    # square tiles, border and all, which deep encoders show: `real` (Real-ESRGAN's RRDB trunk) with a zero residual
    # differed from Real-ESRGAN x4plus by up to 98 levels on Set14 images narrower than a tile's height.
    args.blend = args.blend or ('smooth' if args.degradation else 'uniform')
    problem = cli.tile_problem(args.tile, args.tile_overlap, 'whole images')
    if problem:
        parser.error(problem)
    return args


def run(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns the records. A command line that cannot be used ends the process with one line
    and exit status 2, data or a model that cannot be used with one line and exit status 1 (`cli.exit_on_error`)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with cli.exit_on_error():
        device = cli.pick_device(args.device)
        dtype = cli.pick_precision(device, args.fp16, args.bf16)
        cli.prepare_output_files(args.json, args.markdown, args.plot)
        images = {d: dataset_images(args.data_root, d, args.limit) for d in args.datasets}
        if args.save_lr:
            for dataset, paths in images.items():
                if shared := image_io.shared_stems(paths):
                    raise ValueError(f'--save-lr writes each LR image as NAME.png, but files of {dataset} share a name '
                                     f'but for the suffix: {", ".join(shared)}')
            cli.prepare_output(Path(args.save_lr))
        methods = load_methods(args, device, dtype)
    lpips = unavailable = None
    if args.lpips:
        try:
            lpips = create_lpips(args.iqa_weights, device)
        except MetricUnavailable as err:
            unavailable = str(err)
    if unavailable:
        print(f'LPIPS unavailable: {unavailable}', file=sys.stderr)
    scales = sorted(set(args.scales))
    downsample = args.downsample or 'matlab'
    if args.degradation:
        pipeline = DEGRADATIONS[args.degradation]
        degradation = replace(pipeline, make_pair=partial(pipeline.make_pair, seed=args.seed))
        protocol = (f'LR by {pipeline.description}, seed {args.seed} per image and scale; scored against the plain '
                    'HR: Y channel, shave ceil(scale); SR rounded to 8 bits')
    else:
        degradation = Degradation(partial(bicubic_pair, downsample=downsample), f'{downsample} bicubic')
        protocol = (('RGB, shave ceil(scale) + 6 (DIV2K)' if args.rgb_shave6 else 'Y channel, shave ceil(scale)')
                    + f'; LR by {downsample} bicubic, rounded to 8 bits; SR rounded to 8 bits')
    records, left_out = evaluate(methods, images, scales, lpips, args.rgb_shave6, degradation, args.save_lr)
    if not any(r['n_images'] for r in records):
        with cli.exit_on_error():
            raise ValueError(f'no image could be scored ({len(left_out)} left out, above)')
    if unavailable:  # recorded with the reason, never a number from missing weights
        records = [{**r, 'lpips': None, 'lpips_unavailable': unavailable} for r in records]

    tiling = (f'{args.tile} px LR tiles, {args.tile_overlap} px overlap, {args.blend} blending up to x4' if args.tile
              else 'whole images')
    settings = {'data_root': args.data_root, 'protocol': protocol,
                'tiling': tiling + (f'; {dtype} autocast' if dtype else '; fp32')}
    report = markdown(records, list(methods), args.datasets, scales, settings, left_out)
    print(report)
    seconds = {}
    for r in records:
        seconds[r['method'], r['dataset']] = seconds.get((r['method'], r['dataset']), 0) + r['seconds']
    for dataset in args.datasets:
        print(f'time on {dataset}: ' + ', '.join(f'{m} {seconds[m, dataset]:.1f} s' for m in methods))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1, allow_nan=False))
    if args.markdown:
        Path(args.markdown).write_text(report)
    if args.plot:
        plot(records, list(methods), args.datasets, scales, args.plot)
    return records


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: `run` with the command line; exit status 0 (errors exit earlier with one line: 2 for
    the command line, 1 for data or a model)."""
    run(argv)


if __name__ == '__main__':
    main()
