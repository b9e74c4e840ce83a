"""Upscale a photo or a folder of photos with CiaoSR, at any scale, in bounded memory.

    python inference/inference_ciaosr.py -i INPUT -o OUTDIR -s 8
    torchrun --nproc_per_node=N inference/inference_ciaosr.py -i INPUT -o OUTDIR --size 3840x2160

Large images are cut into LR tiles that overlap; each tile is encoded once and decodes exactly the
output pixels assigned to it, and neighbouring tiles cross-fade with a raised-cosine window, so there
are no seams (`ciaosr_arch.inference.super_resolve`). The tile side comes from --max-memory: the
cross-scale attention is quadratic in the tile area (a (t^2/4) x t^2 score map), which is what tiling
bounds. Each file is read, upscaled and written on its own: one that fails gets one line and the batch
goes on; outputs appear atomically. Under torchrun every rank takes every WORLD_SIZE-th file.
"""
import argparse
import math
import os
import re
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: inference/ is sys.path[0]

from ciaosr_arch import CheckpointError, load_model, super_resolve  # noqa: E402
from ciaosr_arch.inference import memory_plan, output_size  # noqa: E402
from inference import image_io  # noqa: E402

CPU_MEMORY = '2.5GB'  # default --max-memory on CPU; on CUDA three quarters of the GPU's memory
OUTPUT_PIXEL_BYTES = 20  # per output pixel: float accumulators (16) and the 8/16-bit copies being written
HEADROOM = 0.9  # plan for this fraction of --max-memory: the memory model is measured, not exact
LONG_IMAGE_PIXELS = 2 ** 22  # show a per-image bar from this many output pixels


class UsageError(Exception):
    """A bad argument or setting: reported in one line, exit status 2."""


def build_parser():
    parser = argparse.ArgumentParser(
        description='Upscale images with CiaoSR at any scale (LR-space tiling, bounded memory, seam-free).')
    parser.add_argument('-i', '--input', required=True, help='an image file or a folder of images')
    parser.add_argument('-o', '--output', required=True, help='output folder (created if missing)')
    parser.add_argument('--recursive', action='store_true', help='also take images in sub-folders (mirrored)')
    target = parser.add_argument_group('output size (one of; default -s 4)')
    target.add_argument('-s', '--scale', type=float, help='any factor > 1, e.g. 2.7 or 16')
    target.add_argument('--size', help='exact output size WxH, e.g. 3840x2160 (the aspect may change)')
    target.add_argument('--width', type=int, help='output width; height follows the aspect (with --height: both)')
    target.add_argument('--height', type=int, help='output height; width follows the aspect')
    parser.add_argument('--steps', type=int, default=1,
                        help='upscale in K steps of scale^(1/K), each output fed back as input (multi-step '
                             'synthesis, paper Table 6; default 1)')
    parser.add_argument('--model', help='checkpoint: official mmediting .pth, BasicSR .pth or .safetensors '
                                        '(default: the shipped weights/ciaosr_edsr_baseline.safetensors)')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument('--fp16', action='store_true', help='float16 autocast (CUDA only)')
    precision.add_argument('--bf16', action='store_true', help='bfloat16 autocast (CUDA, or CPUs with native bf16)')
    parser.add_argument('--tile', type=int, default=0,
                        help='LR tile side in pixels; 0 (default) = the largest that fits --max-memory (the '
                             'cross-scale attention needs about t^4 bytes for a t x t tile): about 170 for '
                             'the default 2.5GB on CPU; images no larger than the tile run whole')
    parser.add_argument('--tile-overlap', type=int,
                        help='LR pixels shared by neighbouring tiles, at most half the tile '
                             '(default 32, or a quarter of a --tile under 128)')
    parser.add_argument('--max-memory', help=f'memory for the whole run, e.g. 4GB or 512MB (default: {CPU_MEMORY} '
                                             'on CPU, 3/4 of the GPU on CUDA)')
    parser.add_argument('--ext', default='auto', choices=['auto', 'png', 'jpg', 'webp'],
                        help='output format; auto keeps the input format (PNG, JPEG, WebP, TIFF; others become '
                             'PNG); images with alpha are always written as PNG')
    parser.add_argument('--suffix', default='out', help='output name: NAME_SUFFIX.EXT (default out; "" = NAME.EXT)')
    parser.add_argument('--skip-existing', action='store_true', help='leave outputs that exist (resume a run)')
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
    if args.tile_overlap is None:
        args.tile_overlap = min(32, args.tile // 4) if args.tile else 32
    if args.tile < 0 or args.tile_overlap < 0 or (args.tile and 2 * args.tile_overlap > args.tile):
        parser.error(f'--tile must be >= 0 and --tile-overlap between 0 and half the tile '
                     f'(got {args.tile} and {args.tile_overlap})')
    if args.max_memory is not None:
        try:
            args.max_memory = parse_bytes(args.max_memory)
        except ValueError as err:
            parser.error(str(err))
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


def find_images(root, recursive, outdir):
    """Image files under `root` (or `root` itself), sorted; hidden files left out, and so are the files of an
    output folder inside `root` (earlier outputs are not inputs)."""
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UsageError(f'input not found: {root}')
    nested_outdir = outdir.resolve() if outdir.resolve() != root.resolve() else None
    candidates = root.rglob('*') if recursive else root.iterdir()
    return sorted(path for path in candidates
                  if path.suffix.lower() in image_io.IMAGE_SUFFIXES and path.is_file()
                  and not any(part.startswith('.') for part in path.relative_to(root).parts)
                  and nested_outdir not in path.resolve().parents)


def plan_jobs(files, root, outdir, args):
    """A Job per file, in order: output path from the relative path, --suffix and the format; a job whose
    output would be an input file, or the output of an earlier job, gets a problem instead."""
    inputs = {path.resolve(): path for path in files}
    claimed = {}
    jobs = []
    for src in files:
        try:
            with image_io.open_checked(src) as image:
                alpha = image_io.has_alpha(image)
        except image_io.ImageReadError as err:
            jobs.append(Job(src, problem=str(err)))
            continue
        ext = args.ext
        if ext == 'auto':  # the input's own suffix where we can write it
            ext = src.suffix.lower()[1:] if src.suffix.lower()[1:] in image_io.FORMATS else 'png'
        if alpha:
            ext = 'png'
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


def pick_device(choice, local_rank):
    """torch.device for this rank: with CUDA, GPU number LOCAL_RANK."""
    if choice == 'auto':
        choice = 'cuda' if torch.cuda.is_available() else 'cpu'
    if choice == 'cpu':
        return torch.device('cpu')
    if not torch.cuda.is_available():
        raise UsageError('--device cuda: no CUDA device is available')
    if local_rank >= torch.cuda.device_count():
        raise UsageError(f'local rank {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible)')
    torch.cuda.set_device(local_rank)
    return torch.device('cuda', local_rank)


def pick_precision(args, device):
    """Autocast dtype (None: float32); UsageError where the device cannot do it."""
    if args.fp16:
        if device.type != 'cuda':
            raise UsageError('--fp16 needs a CUDA device; on CPU use --bf16')
        return torch.float16
    if args.bf16:
        native = torch.cuda.is_bf16_supported() if device.type == 'cuda' else _cpu_has_bf16()
        if not native:
            raise UsageError('--bf16: this device has no native bfloat16 support; run in float32')
        return torch.bfloat16
    return None


def _cpu_has_bf16():
    try:
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


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


class Upscaler:
    """Runs the network on one picture: colour through CiaoSR (gray as RGB), alpha by bicubic resampling.

    Alpha is usually a mask or a smooth ramp, not photographic texture the network was trained on, and
    running it through the network would double the work; bicubic keeps edges sharp enough and costs nothing.
    """

    def __init__(self, net, device, dtype, budget, args):
        self.net, self.device, self.dtype, self.args = net, device, dtype, args
        self.budget = budget
        self.base = resident_bytes(device)
        self.plans = []  # how each step of the last picture ran, for the log

    def plan(self, out_size, previous_pixels):
        """(tile, chunk) for one step to `out_size`, with `previous_pixels` of the last step still in memory."""
        fixed = self.base + OUTPUT_PIXEL_BYTES * out_size[0] * out_size[1] + 12 * previous_pixels
        work = HEADROOM * self.budget - fixed
        try:
            return memory_plan(self.net, work, half=self.dtype is not None, tile=self.args.tile,
                               min_tile=max(32, 2 * self.args.tile_overlap + 1))
        except MemoryError:
            raise MemoryError(f'output {out_size[1]}x{out_size[0]} does not fit in --max-memory '
                              f'{self.budget / 2 ** 30:.2f} GiB (the model and output alone need '
                              f'{fixed / 2 ** 30:.2f} GiB); raise --max-memory or lower the scale') from None

    def __call__(self, picture, size, progress=None):
        """Picture upscaled to size (H, W), with the same channels, dtype and ICC profile."""
        pixels = picture.pixels
        peak = np.iinfo(pixels.dtype).max
        colour = pixels[..., :3 if pixels.shape[2] >= 3 else 1].astype(np.float32) / peak
        image = torch.from_numpy(colour).to(self.device).permute(2, 0, 1)[None]
        image = image.expand(-1, 3, -1, -1) if picture.is_gray else image
        h, w = pixels.shape[:2]
        steps = self.args.steps
        self.plans = []
        for k in range(1, steps + 1):
            step_size = size if k == steps else (round(h * (size[0] / h) ** (k / steps)),
                                                 round(w * (size[1] / w) ** (k / steps)))
            tile, chunk = self.plan(step_size, image.shape[-1] * image.shape[-2] if k > 1 else 0)
            whole = tile >= max(image.shape[-2:])
            self.plans.append(f'{"whole image" if whole else f"tile {tile}"}, chunk {chunk}')
            with torch.autocast(self.device.type, self.dtype) if self.dtype else nullcontext():
                image = super_resolve(self.net, image, size=step_size, chunk=chunk, tile=tile,
                                      tile_overlap=self.args.tile_overlap, progress=progress)
        if picture.is_gray:
            image = image.mean(1, keepdim=True)
        out = image[0].permute(1, 2, 0).mul_(peak).round_().cpu().numpy().astype(pixels.dtype)
        del image
        if picture.has_alpha:
            out = np.concatenate([out, resize_alpha(pixels[..., -1], size)[..., None]], -1)
        return image_io.Picture(out, picture.icc_profile)


def resize_alpha(alpha, size):
    """Alpha [h, w] (uint8/uint16) resampled bicubically to size (H, W), clipped to its range."""
    if alpha.min() == alpha.max():
        return np.full(size, alpha.flat[0], alpha.dtype)
    resized = cv2.resize(alpha.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.round(resized), 0, np.iinfo(alpha.dtype).max).astype(alpha.dtype)


def process(job, upscaler, args, bar_position, prefix=''):
    """Upscale one job's file: 'done' or 'skipped'; raises (ImageReadError, ValueError, ...) on failure."""
    if job.problem:
        raise ValueError(job.problem)
    if args.skip_existing and job.dst.exists():
        return 'skipped'
    start = time.perf_counter()
    picture = image_io.read_image(job.src)
    h, w = picture.pixels.shape[:2]
    size = target_size((h, w), args)
    if size[0] < h or size[1] < w:
        raise ValueError(f'is {w}x{h}, larger than the requested {size[1]}x{size[0]}; CiaoSR only upscales')
    bar = None
    if size[0] * size[1] >= LONG_IMAGE_PIXELS:
        bar = tqdm(desc=job.src.name, unit='px', unit_scale=True, leave=False, position=bar_position, total=1)

    def progress(done, total):
        if bar.total != total:  # a new step of --steps
            bar.reset(total)
        bar.update(done - bar.n)

    try:
        result = upscaler(picture, size, progress if bar else None)
    finally:
        if bar:
            bar.close()
    job.dst.parent.mkdir(parents=True, exist_ok=True)
    image_io.write_atomic(job.dst, image_io.encode_image(result, job.dst.suffix[1:]))
    tqdm.write(f'{prefix}{job.src} -> {job.dst}: {w}x{h} -> {size[1]}x{size[0]} ({"; ".join(upscaler.plans)}) '
               f'in {time.perf_counter() - start:.1f} s')
    return 'done'


def run(args):
    """Process this rank's share of the inputs; returns the exit status (0: every file succeeded)."""
    rank, world = int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))
    if not 0 <= rank < world:
        raise UsageError(f'RANK={rank} is not in [0, WORLD_SIZE={world})')
    root, outdir = Path(args.input), Path(args.output)
    files = find_images(root, args.recursive, outdir)
    if not files:
        raise UsageError(f'no images ({", ".join(image_io.IMAGE_SUFFIXES)}) found in {root}')
    device = pick_device(args.device, int(os.environ.get('LOCAL_RANK', 0)))
    dtype = pick_precision(args, device)
    try:
        net = load_model(args.model, device=device)
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    if args.max_memory is None:
        args.max_memory = (torch.cuda.get_device_properties(device).total_memory * 3 // 4 if device.type == 'cuda'
                           else parse_bytes(CPU_MEMORY))
    upscaler = Upscaler(net, device, dtype, args.max_memory, args)
    jobs = plan_jobs(files, root if root.is_dir() else root.parent, outdir, args)[rank::world]
    prefix = f'[rank {rank}/{world}] ' if world > 1 else ''

    counts = {'done': 0, 'skipped': 0, 'failed': 0}
    start = time.perf_counter()
    interrupted = False
    with tqdm(jobs, desc=f'{prefix}images', unit='img', position=2 * rank) as bar:
        for job in bar:
            try:
                counts[process(job, upscaler, args, 2 * rank + 1, prefix)] += 1
            except KeyboardInterrupt:
                interrupted = True
                break
            except Exception as err:  # noqa: BLE001  (one line per failed file; the batch goes on)
                counts['failed'] += 1
                message = str(err).splitlines()[0] if str(err) else ''
                if not isinstance(err, (image_io.ImageReadError, ValueError, MemoryError)):
                    message = f'{type(err).__name__}: {message}'
                tqdm.write(f'{prefix}FAILED {job.src}: {message}', file=sys.stderr)
    seconds = time.perf_counter() - start
    per_image = f'{seconds / counts["done"]:.1f} s per image' if counts['done'] else 'no image upscaled'
    print(f'{prefix}{counts["done"]} done, {counts["skipped"]} skipped, {counts["failed"]} failed, '
          f'{per_image} ({seconds:.0f} s){"; interrupted" if interrupted else ""}', flush=True)
    if interrupted:
        return 130
    return 1 if counts['failed'] else 0


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except UsageError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130


def _exit_on_sigterm(signum, frame):
    """SIGTERM (torchrun, kill) unwinds like Ctrl-C, so temporary files are removed."""
    raise KeyboardInterrupt


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sys.exit(main())
