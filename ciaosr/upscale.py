"""Upscale a photo or a folder of photos with CiaoSR, at any scale, in bounded memory.

    ciaosr-upscale -i INPUT -o OUTDIR -s 8
    torchrun --nproc_per_node=N inference/inference_ciaosr.py -i INPUT -o OUTDIR --size 3840x2160

Large images are cut into LR tiles that overlap; each tile is encoded once and decodes exactly the output
pixels assigned to it, and neighbouring tiles cross-fade with a raised-cosine window, so there are no seams
(`ciaosr_arch.engine.super_resolve`). The tile side is the largest that fits --max-memory, for models with
the cross-scale attention (`default`, `real-l1`) at most 64 on a CPU: its work is quadratic in the tile area (a
(t^2/4) x t^2 score map, made a band at a time), which is what tiling bounds (`ciaosr_arch.engine.speed_tile`).
Each file is checked from its header first (size, output size and memory plan against --max-memory, before any
pixel is decoded), then read, upscaled and written on its own: one that fails gets one line and the batch goes on;
outputs appear atomically and never hold NaN. Under torchrun every rank takes every WORLD_SIZE-th file.

This module is the command line (arguments, listing, output names, ranks, bars and log lines); the pictures and
files themselves go through `ciaosr.pipeline.Upscaler`, built from the arguments, which the web app shares.
"""
import argparse
import datetime
import os
import re
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from ciaosr_arch import load_model
from ciaosr_arch.engine import MIN_TILE
from ciaosr_arch.errors import error_line
from ciaosr_arch.runtime import RUNTIMES, use_runtime
from ciaosr_arch.shipped import SHIPPED_MODELS

from . import image_io, pipeline, video
from .cli import (
    OneLineParser,
    UsageError,
    add_device_options,
    console_script_setup,
    cpu_path_line,
    memory_warning,
    parse_bytes,
    pick_device,
    pick_precision,
    prepare_output,
    tile_problem,
    upscale_arg,
)
from .scripts import INTERRUPTED

LONG_IMAGE_PIXELS = 2 ** 22  # show a per-image bar from this many output pixels
RANK_WAIT = datetime.timedelta(days=7)  # how long ranks that are done wait for the slowest one under torchrun
RANK_POLL = 0.2  # seconds between looks at the other ranks while waiting (so that Ctrl-C and SIGTERM still end it)
OUTCOMES = ('waiting', 'skipped', 'done', 'failed')  # what a file's run ends in, in the order that ranks' views of
# one file combine: a video is 'waiting' on the ranks that leave its join to another, and failed if it failed on any


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description='Upscale images and videos with CiaoSR at any scale (LR-space tiling, bounded memory, seam-free).')
    parser.add_argument('-i', '--input', required=True,
                        help='an image or video file, or a folder of them (videos need the `video` extra)')
    parser.add_argument('-o', '--output', required=True, help='output folder (created if missing)')
    parser.add_argument('--recursive', action='store_true',
                        help='also take images and videos in sub-folders (mirrored)')
    target = parser.add_argument_group('output size (one of; default -s 4)')
    target.add_argument('-s', '--scale', type=upscale_arg, help='any factor > 1, e.g. 2.7, 16 or x4')
    target.add_argument('--size', help='exact output size WxH, e.g. 3840x2160 (the aspect may change)')
    target.add_argument('--width', type=int, help='output width; height follows the aspect (with --height: both)')
    target.add_argument('--height', type=int, help='output height; width follows the aspect')
    target.add_argument('--long-side', type=int,
                        help='output long side (the width of a landscape or square picture, the height of a portrait '
                             'one), the other follows the aspect: e.g. 3840 for a folder of mixed photos')
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
    parser.add_argument('--tile', type=int, default=0,
                        help=f'LR tile side in pixels, 0 or at least {MIN_TILE}; 0 (default) = the largest that '
                             'fits --max-memory (about 20 KB per LR pixel), at most 512 on GPU, and 64 on CPU for '
                             'models with the cross-scale attention (default, real-l1: its work per pixel grows '
                             'with the tile area); images no larger than the tile run whole')
    parser.add_argument('--tile-overlap', type=int,
                        help='LR pixels shared by neighbouring tiles, at most half the tile '
                             '(default: a quarter of the tile, at most 32)')
    share = round(100 * pipeline.CPU_MEMORY_SHARE)
    parser.add_argument('--max-memory', help=f'memory for the whole run, e.g. 4GB or 512MB (default on CPU: {share}%% '
                                             f'of the machine\'s memory, at least {pipeline.CPU_BUDGET / 2 ** 30:g}GB; '
                                             'on CUDA 3/4 of the GPU)')
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parsed and checked arguments; every problem ends the run through parser.error (one line, exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = [name for name in ('scale', 'size', 'long_side') if getattr(args, name) is not None]
    if args.width is not None or args.height is not None:
        given.append('width/height')
    if len(given) > 1:
        parser.error(f'give only one of --scale, --size, --width/--height and --long-side (got '
                     f'{" and ".join(name.replace("_", "-") for name in given)})')
    if args.scale is None and not given:
        args.scale = 4.0
    if args.size is not None:
        match = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', args.size)
        if not match or min(int(match[1]), int(match[2])) < 1:
            parser.error(f'--size must be WIDTHxHEIGHT in pixels, e.g. 3840x2160, got {args.size!r}')
        args.width, args.height = int(match[1]), int(match[2])
    for name in ('width', 'height', 'long_side'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be a positive number of pixels')
    if args.steps < 1:
        parser.error(f'--steps must be at least 1, got {args.steps}')
    problem = tile_problem(args.tile, args.tile_overlap, 'automatic')
    if problem:
        parser.error(problem)
    if args.max_memory is not None:
        try:
            args.max_memory = parse_bytes(args.max_memory)
        except ValueError as err:
            parser.error(str(err))
    if args.crf is not None and not 0 <= args.crf <= 63:
        parser.error(f'--crf must be between 0 and 63, got {args.crf}')
    if '/' in args.suffix or '\\' in args.suffix:
        parser.error('--suffix cannot contain a path separator')
    args.target = pipeline.Target(args.scale, args.width, args.height, args.long_side)
    return args


@dataclass
class Job:
    """One input file and where its output goes; `problem` says why it cannot be done (then dst is None). Images
    also carry what planning read: the header (image_io.ImageInfo), the file's `file_stamp` when it was read, and
    why the output's format is not the one asked for (`pipeline.output_format`'s note, or None)."""
    src: Path
    dst: Path | None = None
    problem: str | None = None
    info: image_io.ImageInfo | None = None
    stamp: tuple[int, int] | None = None
    note: str | None = None


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(bytes, modification time in ns) of a file, None if it cannot be read: a file whose stamp changed has
    changed."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def find_images(root: Path, recursive: bool, outdir: Path,
                suffix: str) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """(inputs, earlier outputs left out, ignored): image and video files under `root` (or `root` itself), sorted,
    and the other files as [(path, why)].

    Hidden files are never inputs (`image_io.list_files`), and neither are our own outputs: everything in an
    output folder inside `root`, or, when the output folder is `root` itself, the files named NAME_SUFFIX.EXT
    with an extension we write (so that a second run into the input folder finds the same inputs).
    """
    if root.is_file():
        return [root], [], []
    if not root.is_dir():
        raise FileNotFoundError(f'input not found: {root}')
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


def plan_jobs(files: Sequence[Path], root: Path, outdir: Path, args: argparse.Namespace) -> list[Job]:
    """A Job per file, in order: output path from the relative path, --suffix and the format (images:
    `pipeline.output_format`, from the header, which the job keeps; videos: `video.output_suffix`); a job whose file
    is refused from its header (unreadable, animated, a video without PyAV, ...), whose output would be an input
    file, or the output of an earlier job, gets a problem instead."""
    inputs = {path.resolve(): path for path in files}
    claimed = {}
    jobs = []
    for src in files:
        info = stamp = note = None
        try:
            if video.is_video(src):
                ext = video_ext(src, args)
            else:
                stamp = file_stamp(src)
                info = image_io.probe_image(src)
                ext, note = pipeline.output_format(src, info, args.target.size((info.height, info.width)), args.ext)
        except (image_io.ImageReadError, video.VideoError) as err:
            jobs.append(Job(src, problem=str(err)))
            continue
        dst = pipeline.output_path(outdir, src.relative_to(root), ext, args.suffix)
        key = dst.resolve()
        if key in inputs:
            jobs.append(Job(src, problem=f'its output {dst} is an input file; refusing to overwrite it'))
        elif key in claimed:
            jobs.append(Job(src, problem=f'its output {dst} is also the output of {claimed[key]}'))
        else:
            claimed[key] = src
            jobs.append(Job(src, dst, info=info, stamp=stamp, note=note))
    return jobs


def video_ext(src: Path, args: argparse.Namespace) -> str:
    """The output suffix (without the dot) of the video `src`; VideoError if PyAV is missing or it is unreadable."""
    return video.output_suffix(src, video.pick_codec(src, args)[0])[1:]


def process(job: Job, upscaler: pipeline.Upscaler, args: argparse.Namespace, bar_position: int, prefix: str = '',
            planned: Collection[Path] = frozenset(), since: float = 0.0, rank: int = 0, world: int = 1) -> str:
    """Upscale one job's file with `upscaler` (pipeline.Upscaler): 'done', 'skipped' or (a video whose other
    segments are other ranks') 'waiting'; raises (ImageReadError, VideoError, ValueError, ...) on failure. `since`:
    this run's start (seconds since the epoch); rank and world: this process's share of a video's segments (videos:
    `video.process_video`).

    An image goes through `pipeline.Upscaler.upscale_file` with the header read when it was planned, so sizes,
    memory and the output format are checked before it is decoded. A file that changed since it was planned (its
    `file_stamp`; e.g. a JPEG replaced by a PNG with alpha) is planned again from its header and written in the
    format that it needs now, saying so, and `job.dst` follows; unless that path is in `planned` (the resolved
    output paths planned for the run's files): then it fails with a message."""
    if job.problem:
        raise ValueError(job.problem)
    assert job.dst is not None  # a job without a problem has its output (`plan_jobs`)
    if video.is_video(job.src):
        if args.skip_existing and job.dst.exists():
            check_existing(job.dst, video.output_display_size(video.probe_video(job.src), args.target), clip=True)
            return 'skipped'
        clip = video.VideoJob(job.src, job.dst, upscaler, args)
        return video.process_video(clip, upscaler, since, rank, world, bar_position, prefix)
    start = time.perf_counter()
    info, note = job.info, job.note
    if info is None or file_stamp(job.src) != job.stamp:  # (an image's job has its header: `plan_jobs`)
        info = image_io.probe_image(job.src)
        ext, note = pipeline.output_format(job.src, info, args.target.size((info.height, info.width)), args.ext)
        if job.dst.suffix != f'.{ext}':
            dst = job.dst.with_suffix(f'.{ext}')
            if dst.resolve() in planned:
                raise ValueError(f'the file changed during the run: its output would now be {dst}, the output of '
                                 f'another file; run it again on its own')
            job.dst, note = dst, 'the file changed during the run' + (f'; {note}' if note else '')
    size = args.target.size((info.height, info.width))
    if args.skip_existing and job.dst.exists():
        check_existing(job.dst, size)
        return 'skipped'
    bar = None
    if size[0] * size[1] >= LONG_IMAGE_PIXELS:
        bar = tqdm(desc=job.src.name, unit='px', unit_scale=True, leave=False, position=bar_position, total=1)
    try:
        done = upscaler.upscale_file(job.src, job.dst, args.target, info, bar_progress(bar) if bar else None)
    finally:
        if bar:
            bar.close()
    (h, w), (out_h, out_w) = done.in_size, done.size
    notes = ''.join(f' ({text})' for text in (note, args.target.stretch(done.in_size, done.size)) if text)
    tqdm.write(f'{prefix}{job.src} -> {done.dst}: {w}x{h} -> {out_w}x{out_h} ({"; ".join(map(str, done.steps))}) '
               f'in {time.perf_counter() - start:.1f} s{notes}')
    return 'done'


def check_existing(dst: Path, wanted: tuple[int, int], clip: bool = False) -> None:
    """--skip-existing: the output that exists at `dst` (a video if `clip`) must have the (H, W) that this run would
    write, `wanted`; ValueError (one line) if it has another (an earlier run at another size: skipping it would leave
    a file of the wrong size) or cannot be read."""
    try:
        found = video.probe_video(dst).display_size if clip else image_io.written_size(dst)
    except (image_io.ImageReadError, video.VideoError) as err:
        raise ValueError(f'its output {dst} exists but cannot be read ({err}); move it away, or run without '
                         f'--skip-existing to replace it') from None
    if found != wanted:
        raise ValueError(f'its output {dst} exists at {found[1]}x{found[0]}, not the {wanted[1]}x{wanted[0]} of this '
                         f'run; use another -o or --suffix, or run without --skip-existing to replace it')


def bar_progress(bar: tqdm) -> pipeline.Progress:
    """The pipeline's progress(done, total) shown on a tqdm `bar` of pixels, reset at each new step of --steps."""
    def progress(done: int, total: int) -> None:
        if bar.total != total:  # a new step of --steps
            bar.reset(total)
        bar.update(done - bar.n)
    return progress


def run(args: argparse.Namespace) -> int:
    """Process this rank's share of the inputs; returns the exit status (0: every file succeeded; 1: a file failed,
    under torchrun on any rank, the ranks ending together: `join_ranks`; 130: interrupted).

    Before any work: the inputs are listed (FileNotFoundError, or ValueError if there are none), the output folder
    is created and checked for writing (OSError), rank 0 removes the temporary files that a killed run left there
    (never those of a run that is still writing), and a --max-memory that the memory in use already fills is
    refused (UsageError)."""
    rank, world = int(os.environ.get('RANK', 0)), int(os.environ.get('WORLD_SIZE', 1))
    if not 0 <= rank < world:
        raise UsageError(f'RANK={rank} is not in [0, WORLD_SIZE={world})')
    started = time.time()
    root, outdir = Path(args.input), Path(args.output)
    files, earlier, ignored = find_images(root, args.recursive, outdir, args.suffix)
    if not files:
        raise ValueError(f'no images or videos ({", ".join(image_io.IMAGE_SUFFIXES + video.VIDEO_SUFFIXES)}) '
                         f'found in {root}')
    prepare_output(outdir)
    prefix = f'[rank {rank}/{world}] ' if world > 1 else ''
    notes = []  # about the inputs and the output folder: printed after the line that names the path taken
    if rank == 0:
        if earlier:
            notes.append(f'{prefix}not taken as inputs: {len(earlier)} earlier output(s) of this tool in {outdir}')
        notes += [f'{prefix}ignored {path}: {why}' for path, why in ignored]
        removed = image_io.remove_partial_files(outdir, args.recursive)
        if removed:
            notes.append(f'{prefix}removed {len(removed)} temporary file(s) left in {outdir} by an interrupted run')
    try:
        device = pick_device(args.device, int(os.environ.get('LOCAL_RANK', 0)))
        dtype = pick_precision(device, args.fp16, args.bf16, args.int8)
        net = load_model(args.model, device=device)
        if args.threads:
            torch.set_num_threads(args.threads)
        try:
            runtime = use_runtime(net, args.runtime, int8=args.int8, report=lambda line: tqdm.write(prefix + line))
        except RuntimeError as err:
            raise UsageError(str(err)) from None
        if device.type == 'cpu':
            tqdm.write(prefix + cpu_path_line(runtime, dtype, args.int8))
    finally:  # after the path line, or before the error that ends the run
        for line in notes:
            tqdm.write(line)
    if args.max_memory is None:
        args.max_memory = pipeline.default_budget(device)
    warning = memory_warning(args.max_memory, device)
    if warning and rank == 0:
        tqdm.write(warning, file=sys.stderr)
    try:
        upscaler = pipeline.Upscaler(net, device, dtype, args.max_memory, args.steps, args.tile, args.tile_overlap,
                                     names=pipeline.CLI_NAMES)
    except ValueError as err:  # the options' values (the budget)
        raise UsageError(str(err)) from None
    every_job = plan_jobs(files, root if root.is_dir() else root.parent, outdir, args)
    planned = {job.dst.resolve() for job in every_job if job.dst}
    images = [job for job in every_job if not video.is_video(job.src)]
    mine = set(map(id, images[rank::world]))  # images by file; every rank takes a share of each video's segments
    jobs = [job for job in every_job if id(job) in mine or video.is_video(job.src)]

    own_group = join_ranks(world)
    outcomes = dict.fromkeys(map(id, every_job), OUTCOMES.index('waiting'))  # this rank's view of every file
    counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
    start = time.perf_counter()
    interrupted, current = False, None
    try:  # Ctrl-C or SIGTERM anywhere in the loop (in a file, or between files in tqdm): the summary still comes
        with tqdm(jobs, desc=f'{prefix}files', unit='file', position=2 * rank) as bar:
            for job in bar:
                current = job
                try:
                    outcome = process(job, upscaler, args, 2 * rank + 1, prefix, planned, started, rank, world)
                except Exception as err:  # noqa: BLE001  (one line per failed file; the batch goes on)
                    outcome = 'failed'
                    expected = isinstance(err, (image_io.ImageReadError, video.VideoError, ValueError, MemoryError))
                    tqdm.write(f'{prefix}FAILED {job.src}: {error_line(err, named=not expected)}', file=sys.stderr)
                counts[outcome] += 1
                outcomes[id(job)] = OUTCOMES.index(outcome)
                current = None
    except KeyboardInterrupt:
        interrupted = True
        if current is not None:  # its output is written whole or not at all (a video keeps its finished segments)
            tqdm.write(f'{prefix}interrupted {current.src}: not saved'
                       + ('; its finished segments are kept for --skip-existing' if video.is_video(current.src)
                          else ''), file=sys.stderr)
    seconds = time.perf_counter() - start
    per_image = f'{seconds / counts["done"]:.1f} s per file' if counts['done'] else 'nothing upscaled'
    waiting = f', {counts["waiting"]} joined by another rank' if counts['waiting'] else ''
    ignored = f', {len(ignored)} ignored' if ignored and rank == 0 else ''
    print(f'{prefix}{counts["done"]} done, {counts["skipped"]} skipped, {counts["failed"]} failed{waiting}{ignored}, '
          f'{per_image} ({seconds:.0f} s){"; interrupted" if interrupted else ""}', flush=True)
    if interrupted:
        print('interrupted', file=sys.stderr)  # as every command ends on Ctrl-C or SIGTERM
        return INTERRUPTED
    if world > 1 and dist.is_initialized():  # torchrun: every file's outcome over all ranks
        combined = combine_outcomes([outcomes[id(job)] for job in every_job], own_group)
        counts = {name: combined.count(code) for code, name in enumerate(OUTCOMES)}
        if rank == 0:
            print(f'all {world} ranks: {counts["done"]} done, {counts["skipped"]} skipped, {counts["failed"]} failed',
                  flush=True)
    return 1 if counts['failed'] else 0


def join_ranks(world: int) -> bool:
    """Joins the ranks in a process group (gloo, on the CPU) when torchrun started them (WORLD_SIZE > 1 and
    TORCHELASTIC_RUN_ID set), so that they end together (`combine_outcomes`): torchrun stops every rank as soon as one
    exits with a non-zero status, so a rank whose file failed must not end before the others are done. Ranks started
    by hand (RANK and WORLD_SIZE only, e.g. one after the other) run independently. A group the caller made already
    is used as it is. Returns whether this call made the group (to be left after `combine_outcomes`); OSError (one
    line) if the ranks cannot reach each other."""
    if world == 1 or 'TORCHELASTIC_RUN_ID' not in os.environ or dist.is_initialized():
        return False
    try:
        dist.init_process_group('gloo', timeout=RANK_WAIT)
    except RuntimeError as err:  # torch.distributed.DistError and its kinds
        raise OSError(f'cannot join the other torchrun ranks (gloo: {error_line(err)})') from None
    return True


def combine_outcomes(codes: list[int], leave: bool) -> list[int]:
    """Every rank's view of every file (`codes`: indices in OUTCOMES, one per file of the run, in the same order on
    every rank) combined into the file's outcome (the largest index), once all ranks have called it; waits for them
    with Ctrl-C and SIGTERM still ending the wait (KeyboardInterrupt). `leave`: leave the process group after."""
    combined = torch.tensor(codes, dtype=torch.int64)
    work = dist.all_reduce(combined, op=dist.ReduceOp.MAX, async_op=True)
    assert work is not None  # async_op
    while not work.is_completed():  # a blocking wait would hold back the signal handlers until the last rank came
        time.sleep(RANK_POLL)
    work.wait()
    if leave:
        dist.destroy_process_group()
    return combined.tolist()


def main(argv: Sequence[str] | None = None) -> int:
    """The console script (also `python -m ciaosr.upscale` and inference/inference_ciaosr.py): `run` with the
    command line; returns the exit status (0; 1 if a file failed, or an input, the model or the output folder
    cannot be used; 2 for a command line that cannot be used (`ciaosr.cli.exit_on_error`'s convention); 130 when
    interrupted by Ctrl-C or SIGTERM: the summary is printed and no temporary file is left). File names that the
    console cannot print come out escaped, never as a failure."""
    args = parse_args(argv)
    console_script_setup()
    try:
        return run(args)
    except UsageError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError
        print(f'error: {err}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return INTERRUPTED


if __name__ == '__main__':
    sys.exit(main())
