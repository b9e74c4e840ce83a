"""Full-reference benchmark (PSNR / SSIM, optional LPIPS) in the layout of the CiaoSR paper's Tables 2-3.

    ciaosr-benchmark --model PATH|bicubic|default [--model ...] --data-root DIR \\
        --datasets Set5 Set14 B100 Urban100 Manga109 --scales 2 3 4 6 8 12 --json OUT.json --markdown OUT.md

Protocol (`ciaosr_arch.evaluation`): LR = MATLAB bicubic down-sampling of the HR image (LIIF's floor/round crop),
rounded to 8 bits; SR rounded to 8 bits; PSNR/SSIM on Y with shave = ceil(scale), or `--rgb-shave6` (DIV2K: RGB,
shave ceil(scale) + 6); single-channel HR images are scored on their gray intensity. The Bicubic row (MATLAB bicubic
up-sampling of the LR) is always included. Models run through `super_resolve`, by default in the official test-time
tiling (192 px LR tiles, 32 px overlap, uniform averaging), since the non-local attention is quadratic in LR area.
Images are listed and read by `inference.image_io` (hidden files skipped, 16-bit samples rounded to 8 bits); an image
that cannot be read, or is too small for a scale, is named and left out; a metric that cannot be computed is null in
the JSON, with the reason.
"""
import argparse
import itertools
import json
import math
import sys
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ciaosr_arch import CheckpointError, load_model, super_resolve
from ciaosr_arch.engine import MIN_TILE
from ciaosr_arch.evaluation import (
    benchmark_pair,
    bicubic_upsample,
    lr_size,
    psnr_ssim,
    scale_label,
    shave,
    to_rgb,
    to_uint8,
)

from . import cli, image_io

DATASETS = ('Set5', 'Set14', 'B100', 'Urban100', 'Manga109')
MAX_IN_SCALE = 4  # CiaoSR/LIIF train on x1-x4: larger scales are out-of-scale
METRIC_FORMATS = {'psnr': ('PSNR (dB)', '{:.2f}'), 'ssim': ('SSIM', '{:.4f}'), 'lpips': ('LPIPS', '{:.4f}')}
SSIM_WINDOW = 11  # BasicSR's SSIM keeps only the pixels where its 11x11 Gaussian window fits


def dataset_images(data_root, dataset, limit=None):
    """Image files of data_root/dataset (`image_io.list_images`: hidden files skipped), sorted by name (the first
    `limit` ones); FileNotFoundError if the folder is missing or holds no images."""
    folder = Path(data_root) / dataset
    files = image_io.list_images(folder) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f'no images in {folder}')
    return files[:limit]


def load_hr(path):
    """uint8 HR image of a file read by `image_io.read_image`: [H, W] for gray files (scored as gray, see
    evaluation), else [H, W, 3] RGB; 16-bit samples are rounded to 8 bits and alpha is dropped.
    ImageReadError (one line) if the file cannot be read."""
    pixels = image_io.read_image(path).pixels
    pixels = image_io.to_8bit(pixels[..., :1] if pixels.shape[2] <= 2 else pixels[..., :3])
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


def too_small(hr_size, scale, rgb_shave6=False):
    """Why an HR image of hr_size (H, W) cannot be scored at `scale`, or None: its LR would be empty, or what is
    left of the cropped HR after the shave has no room for SSIM's window."""
    if min(lr_size(hr_size, scale)) < 1:
        return f'{hr_size[1]}x{hr_size[0]} has an empty LR at {scale_label(scale)}'
    border = shave(scale, rgb_shave6)
    left = min(round(side * scale) for side in lr_size(hr_size, scale)) - 2 * border
    if left < SSIM_WINDOW:
        return (f'{hr_size[1]}x{hr_size[0]} leaves {max(left, 0)} pixels per side after the {border}-pixel shave at '
                f'{scale_label(scale)}, fewer than the {SSIM_WINDOW}x{SSIM_WINDOW} SSIM window')
    return None


def upscale_model(net, lr, size, device, dtype=None, **tiling):
    """A CiaoSR/LIIF network's output [1, 3, H, W] in [0, 1] for lr [1, 3, h, w].

    Tiled up to x4 only, as the official test configs (larger scales run on the whole LR image);
    `dtype`: autocast precision (None: float32; bfloat16 is about 2x faster on CPUs with bf16 instructions).
    """
    if size[0] / lr.shape[-2] > MAX_IN_SCALE + 1e-6:
        tiling = {**tiling, 'tile': 0}
    with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
        return super_resolve(net, lr.to(device), size=size, **tiling).float().cpu()


def load_methods(args, device, dtype=None):
    """{name: upscale(lr, size)}: bicubic first, then each --model (`cli.model_specs`: shipped names or
    checkpoint paths), autocast to `dtype` (None: float32)."""
    methods = {cli.BICUBIC: bicubic_upsample}
    tiling = {'tile': args.tile, 'tile_overlap': args.tile_overlap, 'blend': args.blend, 'dtype': dtype}
    for name, spec in cli.model_specs(args).items():
        methods[name] = partial(upscale_model, load_model(spec, device=device), device=device, **tiling)
    return methods


def lpips_score(metric, sr, hr, border):
    """LPIPS of uint8 sr against hr (RGB; gray hr copied to RGB) without `border` pixels per side."""
    def crop_tensor(img):
        return torch.from_numpy(np.ascontiguousarray(to_rgb(img)[border:-border, border:-border])).permute(2, 0, 1)
    return metric(crop_tensor(sr)[None].float() / 255, crop_tensor(hr)[None].float() / 255).item()


def evaluate(methods, images, scales, lpips=None, rgb_shave6=False, downsample='matlab'):
    """(records, left out): records {method, dataset, scale, psnr, ssim (, lpips), n_images, seconds} with the
    means over each dataset's images, and a line per image left out.

    images: {dataset: [HR image paths]}; lpips: a pyiqa LPIPS metric or None; seconds: upscaling + scoring time.
    Every file's header is checked before any work: a file that cannot be read is left out (so is one that turns
    out damaged when it is decoded), and so is an image too small for a scale (`too_small`), at that scale; each
    is named on stderr. A metric that cannot be computed for an image (the model's output is not finite;
    PSNR is infinite where SR equals HR) makes the record's value None, with the reason in METRIC_unavailable.
    """
    left_out = []

    def leave_out(line):
        left_out.append(line)
        tqdm.write(f'left out: {line}', file=sys.stderr)

    work = {}  # path -> the scales it is scored at
    for path in itertools.chain(*images.values()):
        try:
            info = image_io.probe_image(path)
        except image_io.ImageReadError as err:
            leave_out(f'{path}: {err}')
            continue
        work[path] = []
        for scale in scales:
            problem = too_small((info.height, info.width), scale, rgb_shave6)
            if problem:
                leave_out(f'{path} at {scale_label(scale)}: {problem}')
            else:
                work[path].append(scale)
    metrics = ('psnr', 'ssim') + (('lpips',) if lpips is not None else ())
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
                lr, hr = benchmark_pair(img, scale, downsample)
                for method, upscale in methods.items():
                    start = time.perf_counter()
                    sr = upscale(lr, hr.shape[:2])
                    if torch.isfinite(sr).all():
                        sr = to_uint8(sr)
                        values = dict(zip(('psnr', 'ssim'), psnr_ssim(sr, hr, scale, rgb_shave6)))
                        if lpips is not None:
                            values['lpips'] = lpips_score(lpips, sr, hr, shave(scale, rgb_shave6))
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
        records.append({'method': method, 'dataset': dataset, 'scale': scale,
                        **summarise(per_image, metrics, f'no image of {dataset} can be scored at {scale_label(scale)}'),
                        'n_images': len(per_image), 'seconds': round(seconds.get((method, dataset, scale), 0), 2)})
    return records, left_out


def summarise(per_image, metrics, nothing):
    """{metric: mean} of [(image name, {metric: value or None})]; a metric that is None or not finite for some
    image is None, with the reason under 'METRIC_unavailable' (`nothing` when there are no images)."""
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
        value = dict(values)[failed[0]]
        why = ('the model output is not finite' if value is None else
               'SR equals HR (infinite PSNR)' if value == math.inf else f'the value is {value}')
        summary[f'{metric}_unavailable'] = f'{why} for {", ".join(failed)}'
    return summary


def markdown_table(records, metric, methods, datasets, scales):
    """Tables 2-3 layout: one row per method, columns dataset x scale; out-of-scale columns marked with *."""
    label, fmt = METRIC_FORMATS[metric]
    cells = {(r['method'], r['dataset'], r['scale']): r[metric] for r in records}
    columns = [(d, s) for d in datasets for s in scales]
    header = ['Method'] + [f'{d} {scale_label(s)}' + ('*' if s > MAX_IN_SCALE else '') for d, s in columns]
    rows = [[method] + ['-' if cells.get((method, *c)) is None else fmt.format(cells[method, *c]) for c in columns]
            for method in methods]
    lines = [f'### {label}', '', '| ' + ' | '.join(header) + ' |', '|---' + '|---:' * len(columns) + '|']
    return lines + ['| ' + ' | '.join(row) + ' |' for row in rows]


def markdown(records, methods, datasets, scales, settings, left_out=()):
    """The report: settings, one Tables 2-3 style table per metric, the metrics that could not be computed and the
    images left out (lines of `evaluate`)."""
    n_images = {}
    for r in records:
        n_images[r['dataset']] = max(n_images.get(r['dataset'], 0), r['n_images'])
    lines = ['# Full-reference benchmark', '',
             f'Data: `{settings["data_root"]}`: ' + ', '.join(f'{d} ({n_images[d]} images)' for d in datasets) + '.',
             f'Protocol: {settings["protocol"]}.',
             f'In-scale: x{MAX_IN_SCALE} and below (training range); * out-of-scale.',
             f'Models: {settings["tiling"]}.', '']
    metrics = ['psnr', 'ssim'] + (['lpips'] if any(r.get('lpips') is not None for r in records) else [])
    for metric in metrics:
        lines += markdown_table(records, metric, methods, datasets, scales) + ['']
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


def plot(records, methods, datasets, scales, path):
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


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    cli.add_model_options(parser, ' (the bicubic row is always included)')
    parser.add_argument('--data-root', default='../shared/data',
                        help='folder with one sub-folder of HR images per dataset (default: ../shared/data, '
                             'relative to the working directory)')
    parser.add_argument('--datasets', nargs='+', default=list(DATASETS))
    parser.add_argument('--scales', type=cli.scale_arg, nargs='+', default=[2, 3, 4, 6, 8, 12])
    parser.add_argument('--limit', type=int, help='only the first N images (sorted by name) of each dataset')
    parser.add_argument('--rgb-shave6', action='store_true', help='DIV2K protocol: RGB, shave ceil(scale) + 6')
    parser.add_argument('--downsample', choices=('matlab', 'pil'), default='matlab', help='how LR is made from HR')
    parser.add_argument('--tile', type=int, default=192,
                        help=f'LR tile side for the models, 0 (whole image) or at least {MIN_TILE}')
    parser.add_argument('--tile-overlap', type=int, default=32)
    parser.add_argument('--blend', choices=('uniform', 'smooth'), default='uniform',
                        help="tile blending: 'uniform' = the official test-time tiling")
    parser.add_argument('--lpips', action='store_true',
                        help='add LPIPS (AlexNet); needs its weights on disk, else recorded as unavailable')
    parser.add_argument('--iqa-weights', help="folder with LPIPS_v0.1_alex-df73285e.pth (default: pyiqa's cache); "
                        'the AlexNet weights are read from torch.hub.get_dir()/checkpoints. Nothing is downloaded')
    parser.add_argument('--json', help='write the records here')
    parser.add_argument('--markdown', help='write the tables here')
    parser.add_argument('--plot', help='write the PSNR-vs-scale plot (PNG) here')
    cli.add_device_options(parser)  # --bf16: faster on CPUs with bf16 instructions; PSNR within about 0.01 dB on Set5
    args = parser.parse_args(argv)
    if args.tile != 0 and args.tile < MIN_TILE:
        parser.error(f'--tile must be 0 (whole images) or at least {MIN_TILE} LR pixels, got {args.tile}')
    if args.tile and not 0 <= args.tile_overlap < args.tile // 2:
        parser.error(f'--tile-overlap must be in [0, tile / 2) for --tile {args.tile}, got {args.tile_overlap}')
    return args


def run(argv=None):
    """Run the benchmark; returns the records."""
    args = parse_args(argv)
    try:
        device = cli.pick_device(args.device)
        dtype = cli.pick_precision(args, device)
        images = {d: dataset_images(args.data_root, d, args.limit) for d in args.datasets}
        methods = load_methods(args, device, dtype)
    except (CheckpointError, FileNotFoundError, ValueError, cli.UsageError) as err:
        sys.exit(f'error: {err}')
    lpips = unavailable = None
    if args.lpips:  # nothing is downloaded: parameters come from --iqa-weights or pyiqa's cache
        from .iqa import MetricUnavailable, create_metric  # pyiqa is heavy to import and only needed here
        try:
            lpips = create_metric('lpips', args.iqa_weights or Path(torch.hub.get_dir()) / 'pyiqa', device)
        except MetricUnavailable as err:
            unavailable = str(err)
    if unavailable:
        print(f'LPIPS unavailable: {unavailable}', file=sys.stderr)
    scales = sorted(set(args.scales))
    records, left_out = evaluate(methods, images, scales, lpips, args.rgb_shave6,
                                 args.downsample)
    if unavailable:  # recorded with the reason, never a number from missing weights
        records = [{**r, 'lpips': None, 'lpips_unavailable': unavailable} for r in records]

    protocol = (('RGB, shave ceil(scale) + 6 (DIV2K)' if args.rgb_shave6 else 'Y channel, shave ceil(scale)')
                + f'; LR by {args.downsample} bicubic, rounded to 8 bits; SR rounded to 8 bits')
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


def main(argv=None):
    """The console script: `run` with the command line; exit status 0 (errors exit earlier with a message)."""
    run(argv)


if __name__ == '__main__':
    main()
