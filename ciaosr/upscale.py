"""Upscale a photo or a folder of photos with CiaoSR, at any scale, in bounded memory.

    ciaosr-upscale -i INPUT -o OUTDIR -s 8
    torchrun --nproc_per_node=N inference/inference_ciaosr.py -i INPUT -o OUTDIR --size 3840x2160

Large images are cut into LR tiles that overlap; each tile is encoded once and decodes exactly the output
pixels assigned to it, and neighbouring tiles cross-fade with a raised-cosine window, so there are no seams
(`ciaosr_arch.engine.super_resolve`). The tile side is the largest that fits --max-memory, at most 64 on a
CPU: the cross-scale attention's work is quadratic in the tile area (a (t^2/4) x t^2 score map, made a band at
a time), which is what tiling bounds. Each file is checked from its header first (size, output size and memory
plan against --max-memory, before any pixel is decoded), then read, upscaled and written on its own: one that
fails gets one line and the batch goes on; outputs appear atomically and never hold NaN. Under torchrun every
rank takes every WORLD_SIZE-th file.
"""
import argparse
import math
import os
import re
import secrets
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ciaosr_arch import CheckpointError, load_model, super_resolve
from ciaosr_arch.engine import MIN_TILE, default_overlap, largest_tile, memory_plan, output_size, speed_tile
from ciaosr_arch.runtime import RUNTIMES, use_runtime
from ciaosr_arch.shipped import SHIPPED_MODELS

from . import image_io, video
from .cli import (
    UsageError,
    add_device_options,
    console_script_setup,
    cpu_path_line,
    memory_warning,
    pick_device,
    pick_precision,
)

CPU_MEMORY = '2.5GB'  # default --max-memory on CPU; on CUDA three quarters of the GPU's memory
# Per output pixel: float accumulators (16 bytes) while upscaling, then OUTPUT_SAMPLE_COPIES bytes per byte of the
# 8/16-bit result (the array and the encoder's copies; measured on 12 MP outputs: at most 3.4 times the array for
# PNG, TIFF and JPEG, 11 bytes per pixel for WebP).
OUTPUT_FLOAT_BYTES = 16
OUTPUT_SAMPLE_COPIES = 4
INPUT_FLOAT_BYTES = 12  # per input pixel: the float RGB copy that goes into the network
BLEED_BYTES = 20  # per input pixel with alpha: filling the hidden colour (mask, labels, distances, gathered colours)
AUTO_MIN_TILE = 32  # the automatic tile is never smaller: a smaller budget fails with a message
HEADROOM = 0.9  # plan for this fraction of --max-memory: the memory model is measured, not exact
LONG_IMAGE_PIXELS = 2 ** 22  # show a per-image bar from this many output pixels


def build_parser():
    parser = argparse.ArgumentParser(
        description='Upscale images and videos with CiaoSR at any scale (LR-space tiling, bounded memory, seam-free).')
    parser.add_argument('-i', '--input', required=True,
                        help='an image or video file, or a folder of them (videos need the `video` extra)')
    parser.add_argument('-o', '--output', required=True, help='output folder (created if missing)')
    parser.add_argument('--recursive', action='store_true',
                        help='also take images and videos in sub-folders (mirrored)')
    target = parser.add_argument_group('output size (one of; default -s 4)')
    target.add_argument('-s', '--scale', type=float, help='any factor > 1, e.g. 2.7 or 16')
    target.add_argument('--size', help='exact output size WxH, e.g. 3840x2160 (the aspect may change)')
    target.add_argument('--width', type=int, help='output width; height follows the aspect (with --height: both)')
    target.add_argument('--height', type=int, help='output height; width follows the aspect')
    parser.add_argument('--steps', type=int, default=1,
                        help='upscale in K steps of scale^(1/K), each output fed back as input (multi-step '
                             'synthesis, paper Table 6; default 1)')
    parser.add_argument('--model', default='default',
                        help=f'a shipped model ({", ".join(SHIPPED_MODELS)}; default: default) or a checkpoint: '
                             'official mmediting .pth, BasicSR .pth or .safetensors')
    add_device_options(parser, int8=True)
    parser.add_argument('--runtime', default='auto', choices=RUNTIMES,
                        help='what runs the matrix products (decode, and the fp32 encode) on the CPU: openvino '
                             '(the same result up to float rounding; with --bf16 in bf16; needs the `runtime` '
                             'extra: pip install "ciaosr[runtime]"), torch, or auto (default: the faster of the '
                             'two for this CPU\'s kind, see README: Performance; torch off the CPU or without '
                             'OpenVINO)')
    parser.add_argument('--threads', type=int,
                        help='CPU threads of PyTorch and OpenVINO (default: PyTorch\'s, which is OMP_NUM_THREADS '
                             'if set (torchrun sets 1 per rank), else one per physical core)')
    parser.add_argument('--tile', type=int, default=0,
                        help=f'LR tile side in pixels, 0 or at least {MIN_TILE}; 0 (default) = the largest that '
                             'fits --max-memory (about 20 KB per LR pixel), at most 64 on CPU and 512 on GPU (the '
                             'cross-scale attention\'s work per pixel grows with the tile area); images no larger '
                             'than the tile run whole')
    parser.add_argument('--tile-overlap', type=int,
                        help='LR pixels shared by neighbouring tiles, at most half the tile '
                             '(default: a quarter of the tile, at most 32)')
    parser.add_argument('--max-memory', help=f'memory for the whole run, e.g. 4GB or 512MB (default: {CPU_MEMORY} '
                                             'on CPU, 3/4 of the GPU on CUDA)')
    parser.add_argument('--ext', default='auto', choices=['auto', 'png', 'jpg', 'webp'],
                        help='output format of images; auto keeps the input format (PNG, JPEG, WebP, TIFF, AVIF; '
                             'others, HEIC and JPEG XL included, become PNG); images with alpha are written as PNG '
                             '(AVIF keeps its alpha), and so are outputs too large for WebP (16383 px) or JPEG '
                             '(65535 px), saying so; videos keep their container (see --video-codec)')
    clip = parser.add_argument_group('videos (every frame upscaled like a photo; audio and subtitles copied)')
    clip.add_argument('--video-codec', choices=sorted(video.CODECS),
                      help='encoder of the upscaled video: h264 (default), h265, av1 or vp9 (default for WebM)')
    clip.add_argument('--crf', type=int, help='constant quality of the encoder, lower is better: default '
                      + ', '.join(f'{crf} for {codec}' for codec, crf in video.DEFAULT_CRF.items()))
    parser.add_argument('--suffix', default='out', help='output name: NAME_SUFFIX.EXT (default out; "" = NAME.EXT)')
    parser.add_argument('--skip-existing', action='store_true',
                        help='leave outputs that exist, and reuse the finished segments of a video (resume a run)')
    return parser


def parse_args(argv=None):
    """Parsed and checked arguments; every problem ends the run through parser.error (one line, exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = [name for name in ('scale', 'size') if getattr(args, name) is not None]
    if args.width is not None or args.height is not None:
        given.append('width/height')
    if len(given) > 1:
        parser.error(f'give only one of --scale, --size and --width/--height (got {" and ".join(given)})')
    if args.scale is None and not given:
        args.scale = 4.0
    if args.scale is not None and not (math.isfinite(args.scale) and args.scale > 1):
        parser.error(f'--scale must be a finite number > 1, got {args.scale}')
    if args.size is not None:
        match = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', args.size)
        if not match or min(int(match[1]), int(match[2])) < 1:
            parser.error(f'--size must be WIDTHxHEIGHT in pixels, e.g. 3840x2160, got {args.size!r}')
        args.width, args.height = int(match[1]), int(match[2])
    for name in ('width', 'height'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f'--{name} must be a positive number of pixels')
    if args.steps < 1:
        parser.error(f'--steps must be at least 1, got {args.steps}')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be at least 1, got {args.threads}')
    if args.tile != 0 and args.tile < MIN_TILE:
        parser.error(f'--tile must be 0 (automatic) or at least {MIN_TILE} LR pixels, got {args.tile}')
    if args.tile_overlap is not None and (args.tile_overlap < 0 or (args.tile and 2 * args.tile_overlap > args.tile)):
        parser.error(f'--tile-overlap must be between 0 and half the tile (at most {args.tile // 2} for --tile '
                     f'{args.tile}), got {args.tile_overlap}' if args.tile else
                     f'--tile-overlap must be >= 0, got {args.tile_overlap}')
    if args.max_memory is not None:
        try:
            args.max_memory = parse_bytes(args.max_memory)
        except ValueError as err:
            parser.error(str(err))
    if args.crf is not None and not 0 <= args.crf <= 63:
        parser.error(f'--crf must be between 0 and 63, got {args.crf}')
    if '/' in args.suffix or '\\' in args.suffix:
        parser.error('--suffix cannot contain a path separator')
    return args


def parse_bytes(text):
    """Bytes in '4GB', '2.5G', '512MiB', '3000000000' (K/M/G/T, decimal or binary: both taken as powers of 1024)."""
    match = re.fullmatch(r'\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*', text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f'--max-memory must be a size such as 4GB or 512MB, got {text!r}')
    return int(float(match[1]) * 1024 ** ' KMGT'.index(match[2].upper() or ' '))


def target_size(in_size, args):
    """(H, W) of the output for an (h, w) input, from --scale, --size or --width/--height."""
    h, w = in_size
    if args.scale is not None:
        return output_size((h, w), args.scale)
    if args.width is not None and args.height is not None:
        return args.height, args.width
    if args.width is not None:
        return max(1, round(h * args.width / w)), args.width
    return args.height, max(1, round(w * args.height / h))


@dataclass
class Job:
    """One input file and where its output goes; `problem` says why it cannot be done (then dst is None)."""
    src: Path
    dst: Path | None = None
    problem: str | None = None


def find_images(root, recursive, outdir, suffix):
    """(inputs, earlier outputs left out, ignored): image and video files under `root` (or `root` itself), sorted,
    and the other files as [(path, why)].

    Hidden files are never inputs (`image_io.list_files`), and neither are our own outputs: everything in an
    output folder inside `root`, or, when the output folder is `root` itself, the files named NAME_SUFFIX.EXT
    with an extension we write (so that a second run into the input folder finds the same inputs).
    """
    if root.is_file():
        return [root], [], []
    if not root.is_dir():
        raise UsageError(f'input not found: {root}')
    root_folder, out_folder = root.resolve(), outdir.resolve()
    nested = out_folder != root_folder and out_folder.is_relative_to(root_folder)
    written = {*(f'.{ext}' for ext in image_io.FORMATS), *video.VIDEO_SUFFIXES}
    inputs, earlier, ignored = [], [], []
    for path in image_io.list_files(root, recursive):
        if nested:
            ours = path.parent.resolve().is_relative_to(out_folder)
        else:
            ours = (out_folder == root_folder and bool(suffix) and path.stem.endswith(f'_{suffix}')
                    and path.suffix.lower() in written)
        if ours:
            earlier.append(path)
        elif path.suffix.lower() in image_io.IMAGE_SUFFIXES or video.is_video(path):
            inputs.append(path)
        else:
            ignored.append((path, f'not an image or video this tool reads ({path.suffix or "no suffix"})'))
    return inputs, earlier, ignored


def output_format(src, info, size, args):
    """(ext, note): the format (a key of image_io.FORMATS) of the output of `src`, an image described by `info`
    (image_io.ImageInfo) and upscaled to `size` (H, W), and why it is not the one asked for (None when it is).

    Asked for: --ext, or with --ext auto the input's own format where we write it (AVIF too; else PNG: HEIC,
    JPEG XL, PSD, ICO, ...). PNG instead where that format cannot hold the output: alpha (written as PNG, except
    AVIF, which keeps it), 16-bit pixels for AVIF, or a side over the format's limit (image_io.MAX_SIDE: WebP
    16383, JPEG 65535 pixels).
    """
    ext = args.ext
    if ext == 'auto':  # the input's own suffix where we can write it
        ext = src.suffix.lower()[1:] if src.suffix.lower()[1:] in image_io.FORMATS else 'png'
    fmt = image_io.FORMATS[ext]
    if info.has_alpha and fmt not in ('PNG', 'AVIF'):
        return 'png', f'it has alpha: written as PNG, not {fmt}'
    if info.itemsize > 1 and fmt == 'AVIF':
        return 'png', 'it has 16-bit pixels: written as PNG, not AVIF'
    limit = image_io.MAX_SIDE.get(fmt)
    if limit and max(size) > limit:
        return 'png', f'{size[1]}x{size[0]} is over the {fmt} limit of {limit} pixels a side: written as PNG'
    return ext, None


def plan_jobs(files, root, outdir, args):
    """A Job per file, in order: output path from the relative path, --suffix and the format (images:
    `output_format`, from the header; videos: `video.output_suffix`); a job whose file is refused from its header
    (unreadable, animated, a video without PyAV, ...), whose output would be an input file, or the output of an
    earlier job, gets a problem instead."""
    inputs = {path.resolve(): path for path in files}
    claimed = {}
    jobs = []
    for src in files:
        try:
            if video.is_video(src):
                ext = video_ext(src, args)
            else:
                info = image_io.probe_image(src)
                ext, _ = output_format(src, info, target_size((info.height, info.width), args), args)
        except (image_io.ImageReadError, video.VideoError) as err:
            jobs.append(Job(src, problem=str(err)))
            continue
        relative = src.relative_to(root)
        name = f'{relative.stem}_{args.suffix}' if args.suffix else relative.stem
        dst = outdir / relative.parent / f'{name}.{ext}'
        key = dst.resolve()
        if key in inputs:
            jobs.append(Job(src, problem=f'its output {dst} is an input file; refusing to overwrite it'))
        elif key in claimed:
            jobs.append(Job(src, problem=f'its output {dst} is also the output of {claimed[key]}'))
        else:
            claimed[key] = src
            jobs.append(Job(src, dst))
    return jobs


def video_ext(src, args):
    """The output suffix (without the dot) of the video `src`; VideoError if PyAV is missing or it is unreadable."""
    return video.output_suffix(src, video.pick_codec(src, args)[0])[1:]


def prepare_output(outdir):
    """Create the output folder if needed and check that files can be written in it; UsageError otherwise."""
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f'the output folder {outdir} exists and is not a folder')
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        probe = outdir / f'.write-test.{secrets.token_hex(4)}.part'
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as err:
        raise UsageError(f'cannot write to the output folder {outdir}: {err.strerror or err}') from None


def resident_bytes(device):
    """Memory in use now: the process's resident set on CPU, tensors on the GPU."""
    if device.type == 'cuda':
        return torch.cuda.memory_allocated(device)
    try:
        with open('/proc/self/statm') as statm:
            return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
        import resource  # not Linux: the peak so far is an upper bound
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)


@dataclass
class Step:
    """One upscaling step: output size (H, W), LR tile side, tile overlap and query chunk; `whole`: the input fits
    one tile."""
    size: tuple
    tile: int
    overlap: int
    chunk: int
    whole: bool

    def __str__(self):
        return f'{"whole image" if self.whole else f"tile {self.tile}, overlap {self.overlap}"}, chunk {self.chunk}'


class Upscaler:
    """Runs the network on one picture: colour through CiaoSR, alpha by bicubic resampling.

    Gray pictures, and colour ones whose three channels are equal everywhere (black-and-white photos stored as
    RGB), go through the network as gray copied to RGB and come out as the mean of its channels: exactly neutral.
    The colour under fully transparent pixels is invisible and arbitrary (black or white, depending on the
    editor): it is replaced by the colour of the nearest visible pixel first, so the visible result does not
    depend on it (no dark or light fringes). Alpha is usually a mask or a smooth ramp, not photographic texture
    the network was trained on, and running it through the network would double the work; bicubic keeps edges
    sharp enough and costs nothing.
    """

    def __init__(self, net, device, dtype, budget, args):
        self.net, self.device, self.dtype, self.args = net, device, dtype, args
        self.budget = budget
        self.base = resident_bytes(device)

    def plan(self, info, size):
        """The steps [Step] that take an image described by `info` (image_io.ImageInfo, read from the header) to
        `size` (H, W) within --max-memory, decided before any pixel is decoded.

        Counted: the memory in use now, decoding (`info.decode_bytes`), the picture and its float copy (and
        the alpha colour fill), the previous step's output, the output (float accumulators, then the 8/16-bit
        result and its encoding); the rest is the work room that `memory_plan` turns into a tile and a chunk
        (--tile, when given, must fit it as the automatic one does). MemoryError (one line) if something does not
        fit, naming the largest tile that would; ValueError if --tile-overlap is too large for the tiles that fit.
        """
        room, gib = HEADROOM * self.budget, 2 ** 30
        h, w = info.height, info.width
        if self.base + info.decode_bytes > room:
            raise MemoryError(f'{w}x{h}: decoding it does not fit in --max-memory {self.budget / gib:.2f} GiB (needs '
                              f'{info.decode_bytes / gib:.2f} GiB on top of the {self.base / gib:.2f} GiB in use); '
                              f'raise --max-memory')
        held = self.base + info.pixel_bytes + h * w * INPUT_FLOAT_BYTES
        if info.has_alpha:
            held += info.pixel_bytes + h * w * BLEED_BYTES
        per_output_pixel = OUTPUT_FLOAT_BYTES + OUTPUT_SAMPLE_COPIES * info.channels * info.itemsize
        steps, previous, in_size, count = [], 0, (h, w), self.args.steps
        for k in range(1, count + 1):
            step_size = size if k == count else (round(h * (size[0] / h) ** (k / count)),
                                                 round(w * (size[1] / w) ** (k / count)))
            fixed = held + previous + per_output_pixel * step_size[0] * step_size[1]
            explicit = min(self.args.tile, max(in_size))  # a tile larger than the image runs as the whole image
            try:
                tile, chunk = memory_plan(self.net, room - fixed, half=self.dtype is not None, tile=explicit,
                                          min_tile=AUTO_MIN_TILE)
            except MemoryError:
                fits = largest_tile(self.net, room - fixed)
                if explicit and fits >= MIN_TILE:
                    raise MemoryError(f'--tile {self.args.tile} does not fit in --max-memory {self.budget / gib:.2f} '
                                      f'GiB for this image: the largest tile that fits is {fits}; lower --tile or '
                                      f'raise --max-memory') from None
                raise MemoryError(f'output {step_size[1]}x{step_size[0]} does not fit in --max-memory '
                                  f'{self.budget / gib:.2f} GiB (the model, input and output alone need '
                                  f'{fixed / gib:.2f} GiB); raise --max-memory or lower the scale') from None
            whole = tile >= max(in_size)
            overlap = self.args.tile_overlap
            if overlap is None:
                overlap = default_overlap(tile)
            elif not whole and 2 * overlap > tile:
                raise ValueError(f'--tile-overlap {overlap} needs LR tiles of at least {2 * overlap} pixels, but the '
                                 f'automatic tile is {tile} here (the largest that --max-memory '
                                 f'{self.budget / gib:.2f} GiB allows, at most {speed_tile(self.device)} on '
                                 f'{self.device.type.upper()}); lower --tile-overlap, or give --tile')
            steps.append(Step(step_size, tile, overlap, chunk, whole))
            previous, in_size = INPUT_FLOAT_BYTES * step_size[0] * step_size[1], step_size
        return steps

    def __call__(self, picture, steps, progress=None):
        """Picture upscaled by `steps` (from `plan`) to steps[-1].size, with the same channels, dtype and ICC
        profile. ValueError if the network's output is not finite: nothing to write."""
        pixels = picture.pixels
        peak = np.iinfo(pixels.dtype).max
        colour = bleed_colour(pixels[..., :-1], pixels[..., -1]) if picture.has_alpha else pixels
        neutral = picture.is_gray or (np.array_equal(colour[..., 0], colour[..., 1])
                                      and np.array_equal(colour[..., 1], colour[..., 2]))
        if neutral:
            colour = colour[..., :1]
        image = torch.empty((1, colour.shape[2], *colour.shape[:2]))  # converted on the CPU (uint16 too)
        image[0].copy_(torch.from_numpy(colour).permute(2, 0, 1))
        del colour
        image = image.to(self.device).div_(peak).expand(-1, 3, -1, -1)
        for step in steps:
            with torch.autocast(self.device.type, self.dtype) if self.dtype else nullcontext():
                image = super_resolve(self.net, image, size=step.size, chunk=step.chunk, tile=step.tile,
                                      tile_overlap=step.overlap, progress=progress)
        if not torch.isfinite(image).all():
            raise ValueError('the network produced NaN or infinite values, so nothing was written '
                             '(a broken checkpoint, or an overflow in --fp16)')
        colour = (image[0].mean(0, keepdim=True) if neutral else image[0]).mul_(peak).round_()
        del image
        out = np.empty((*steps[-1].size, pixels.shape[2]), pixels.dtype)
        out[..., :pixels.shape[2] - picture.has_alpha] = colour.permute(1, 2, 0).cpu().numpy()  # neutral: broadcast
        del colour
        if picture.has_alpha:
            out[..., -1] = resize_alpha(pixels[..., -1], steps[-1].size)
        return image_io.Picture(out, picture.icc_profile)


def bleed_colour(colour, alpha):
    """A copy of colour [h, w, C] in which every fully transparent pixel (alpha == 0) has the colour of the
    nearest visible one (alpha > 0; OpenCV's Euclidean distance transform); zeros if nothing is visible."""
    hidden = alpha == 0
    if not hidden.any():
        return colour
    if hidden.all():
        return np.zeros_like(colour)
    # Each pixel gets the label of its nearest zero (visible) pixel; labels number those 1, 2, ... in raster order.
    _, labels = cv2.distanceTransformWithLabels(hidden.view(np.uint8), cv2.DIST_L2, 3,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    filled = colour.copy()
    filled[hidden] = colour[~hidden][labels[hidden] - 1]
    return filled


def resize_alpha(alpha, size):
    """Alpha [h, w] (uint8/uint16) resampled bicubically (OpenCV) to size (H, W), rounded and clipped to its range."""
    return cv2.resize(np.ascontiguousarray(alpha), (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def process(job, upscaler, args, bar_position, prefix='', planned=frozenset(), since=0.0, rank=0, world=1):
    """Upscale one job's file: 'done', 'skipped' or (a video whose other segments are other ranks') 'waiting';
    raises (ImageReadError, VideoError, ValueError, ...) on failure. `since`: this run's start (seconds since the
    epoch); rank and world: this process's share of a video's segments (videos: `video.process_video`).

    Sizes, memory and the output format (`output_format`) are checked from the file's header before it is
    decoded. A file that changed since it was planned (e.g. a JPEG replaced by a PNG with alpha) is written in the
    format that it needs now, saying so, and `job.dst` follows; unless that path is in `planned` (the resolved
    output paths planned for the run's files): then it fails with a message."""
    if job.problem:
        raise ValueError(job.problem)
    if args.skip_existing and job.dst.exists():
        return 'skipped'
    if video.is_video(job.src):
        clip = video.VideoJob(job.src, job.dst, upscaler, args)
        return video.process_video(clip, upscaler, since, rank, world, bar_position, prefix)
    start = time.perf_counter()
    info = image_io.probe_image(job.src)
    h, w = info.height, info.width
    size = target_size((h, w), args)
    if size[0] < h or size[1] < w:
        raise ValueError(f'is {w}x{h}, larger than the requested {size[1]}x{size[0]}; CiaoSR only upscales')
    ext, note = output_format(job.src, info, size, args)
    if job.dst.suffix != f'.{ext}':
        dst = job.dst.with_suffix(f'.{ext}')
        if dst.resolve() in planned:
            raise ValueError(f'the file changed during the run: its output would now be {dst}, the output of '
                             f'another file; run it again on its own')
        job.dst, note = dst, 'the file changed during the run' + (f'; {note}' if note else '')
    steps = upscaler.plan(info, size)
    picture = image_io.read_image(job.src)
    if picture.pixels.shape[:2] != (h, w):
        raise ValueError('the file changed while it was being read')
    bar = None
    if size[0] * size[1] >= LONG_IMAGE_PIXELS:
        bar = tqdm(desc=job.src.name, unit='px', unit_scale=True, leave=False, position=bar_position, total=1)

    def progress(done, total):
        if bar.total != total:  # a new step of --steps
            bar.reset(total)
        bar.update(done - bar.n)

    try:
        result = upscaler(picture, steps, progress if bar else None)
    finally:
        if bar:
            bar.close()
    del picture
    job.dst.parent.mkdir(parents=True, exist_ok=True)
    image_io.write_atomic(job.dst, image_io.encode_image(result, job.dst.suffix[1:]))
    tqdm.write(f'{prefix}{job.src} -> {job.dst}: {w}x{h} -> {size[1]}x{size[0]} ({"; ".join(map(str, steps))}) '
               f'in {time.perf_counter() - start:.1f} s{f" ({note})" if note else ""}')
    return 'done'


def run(args):
    """Process this rank's share of the inputs; returns the exit status (0: every file succeeded).

    Before any work: the inputs are listed (UsageError if there are none), the output folder is created and
    checked for writing (UsageError), and rank 0 removes the temporary files that a killed run left there (never
    those of a run that is still writing)."""
    rank, world = int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))
    if not 0 <= rank < world:
        raise UsageError(f'RANK={rank} is not in [0, WORLD_SIZE={world})')
    started = time.time()
    root, outdir = Path(args.input), Path(args.output)
    files, earlier, ignored = find_images(root, args.recursive, outdir, args.suffix)
    if not files:
        raise UsageError(f'no images or videos ({", ".join(image_io.IMAGE_SUFFIXES + video.VIDEO_SUFFIXES)}) '
                         f'found in {root}')
    prepare_output(outdir)
    prefix = f'[rank {rank}/{world}] ' if world > 1 else ''
    if rank == 0:
        if earlier:
            tqdm.write(f'{prefix}not taken as inputs: {len(earlier)} earlier output(s) of this tool in {outdir}')
        for path, why in ignored:
            tqdm.write(f'{prefix}ignored {path}: {why}')
        removed = image_io.remove_partial_files(outdir, args.recursive)
        if removed:
            tqdm.write(f'{prefix}removed {len(removed)} temporary file(s) left in {outdir} by an interrupted run')
    device = pick_device(args.device, int(os.environ.get('LOCAL_RANK', 0)))
    dtype = pick_precision(args, device)
    try:
        net = load_model(args.model, device=device)
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        runtime = use_runtime(net, args.runtime, int8=args.int8, report=lambda line: tqdm.write(prefix + line))
    except RuntimeError as err:
        raise UsageError(str(err)) from None
    if device.type == 'cpu':
        tqdm.write(prefix + cpu_path_line(runtime, dtype, args.int8))
    if args.max_memory is None:
        args.max_memory = (torch.cuda.get_device_properties(device).total_memory * 3 // 4 if device.type == 'cuda'
                           else parse_bytes(CPU_MEMORY))
    warning = memory_warning(args.max_memory, device)
    if warning and rank == 0:
        tqdm.write(warning, file=sys.stderr)
    upscaler = Upscaler(net, device, dtype, args.max_memory, args)
    jobs = plan_jobs(files, root if root.is_dir() else root.parent, outdir, args)
    planned = {job.dst.resolve() for job in jobs if job.dst}
    images = [job for job in jobs if not video.is_video(job.src)]
    mine = set(map(id, images[rank::world]))  # images by file; every rank takes a share of each video's segments
    jobs = [job for job in jobs if id(job) in mine or video.is_video(job.src)]

    counts = {'done': 0, 'skipped': 0, 'failed': 0, 'waiting': 0}
    start = time.perf_counter()
    interrupted = False
    try:  # Ctrl-C or SIGTERM anywhere in the loop (in a file, or between files in tqdm): the summary still comes
        with tqdm(jobs, desc=f'{prefix}images', unit='img', position=2 * rank) as bar:
            for job in bar:
                try:
                    counts[process(job, upscaler, args, 2 * rank + 1, prefix, planned, started, rank, world)] += 1
                except Exception as err:  # noqa: BLE001  (one line per failed file; the batch goes on)
                    counts['failed'] += 1
                    message = str(err).splitlines()[0] if str(err) else ''
                    if not isinstance(err, (image_io.ImageReadError, video.VideoError, ValueError, MemoryError)):
                        message = f'{type(err).__name__}: {message}'
                    tqdm.write(f'{prefix}FAILED {job.src}: {message}', file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.perf_counter() - start
    per_image = f'{seconds / counts["done"]:.1f} s per file' if counts['done'] else 'nothing upscaled'
    waiting = f', {counts["waiting"]} joined by another rank' if counts['waiting'] else ''
    ignored = f', {len(ignored)} ignored' if ignored and rank == 0 else ''
    print(f'{prefix}{counts["done"]} done, {counts["skipped"]} skipped, {counts["failed"]} failed{waiting}{ignored}, '
          f'{per_image} ({seconds:.0f} s){"; interrupted" if interrupted else ""}', flush=True)
    if interrupted:
        return 130
    return 1 if counts['failed'] else 0


def main(argv=None):
    """The console script (also `python -m ciaosr.upscale` and inference/inference_ciaosr.py): `run` with the
    command line; returns the exit status (0, 1 if a file failed, 2 for a bad option or setup, 130 when
    interrupted by Ctrl-C or SIGTERM: the summary is printed and no temporary file is left). File names that the
    console cannot print come out escaped, never as a failure."""
    args = parse_args(argv)
    console_script_setup()
    try:
        return run(args)
    except UsageError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
