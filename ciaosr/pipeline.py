"""The picture pipeline: one `Upscaler` shared by the CLI (`ciaosr.upscale`), the web app (`ciaosr.app`) and videos
(`ciaosr.video`).

    from ciaosr import pipeline
    from ciaosr_arch import load_model

    upscaler = pipeline.Upscaler(load_model(), torch.device('cpu'))
    done = upscaler.upscale_file('photo.jpg', 'photo_x4.jpg', pipeline.Target(scale=4),
                                 progress=lambda done, total: print(f'{done}/{total}'))

Three levels, each built on the one before:

- `Upscaler.plan(info, size)`: the steps (tile, overlap, query chunk per step) that take an image to `size` within
  the memory budget, decided from its header (`image_io.ImageInfo`) before any pixel is decoded;
- `Upscaler.upscale(picture, steps, progress)`: one decoded picture (`image_io.Picture`) through the network;
- `Upscaler.upscale_file(src, dst, target, info, progress)`: a file to a file: the header (read once, or given by a
  caller that planned from it), the size and format checks, the plan, the reader, the upscale and the atomic writer.

Progress is a function `progress(done, total)` (output queries decoded of the current step), never a subclass.
Every output size goes through `Target` (so through `check_scale`) and `check_upscale`: the CLI and the app refuse
the same sizes with the same messages.
"""
import gc
import math
import numbers
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ciaosr_arch import super_resolve
from ciaosr_arch.engine import (
    MIN_AUTO_TILE,
    MIN_TILE,
    Net,
    default_overlap,
    largest_tile,
    memory_plan,
    output_size,
    speed_tile,
    tile_bytes,
)
from ciaosr_arch.errors import byte_size
from ciaosr_arch.image import to_pixels, to_tensor

from . import image_io

# The default memory budget on CPU: CPU_MEMORY_SHARE of the machine's memory, at least CPU_BUDGET (2.5 GiB); on CUDA
# three quarters of the GPU's. A 12 MP phone photo at x2 plans at 2.83 GiB (`real`, 0.84 GiB of it the process itself):
# 2.5 GiB alone refused it, 40 % of an 8 GB laptop (3.2 GiB) takes it and leaves the rest to the system.
CPU_BUDGET = 5 * 2 ** 29
CPU_MEMORY_SHARE = 0.4
# Per output pixel: float accumulators (16 bytes) while upscaling, then OUTPUT_SAMPLE_COPIES bytes per byte of the
# 8/16-bit result (the array and the encoder's copies; measured on 12 MP outputs: at most 3.4 times the array for
# PNG, TIFF and JPEG, 11 bytes per pixel for WebP).
OUTPUT_FLOAT_BYTES = 16
OUTPUT_SAMPLE_COPIES = 4
INPUT_FLOAT_BYTES = 12  # per input pixel: the float RGB copy that goes into the network
BLEED_BYTES = 20  # per input pixel with alpha: filling the hidden colour (mask, labels, distances, gathered colours)
HEADROOM = 0.9  # plan for this fraction of the budget: the memory model is measured, not exact

Progress = Callable[[int, int], None]  # progress(done, total): output queries decoded of the current step


def check_scale(scale: float, name: str = 'the scale') -> float:
    """`scale` as a float if it is a finite number > 1; ValueError '`name` must be a finite number > 1, got ...'
    otherwise (x1 and below: CiaoSR only upscales). The one scale check of the CLI, the app and the library."""
    if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 1):
        raise ValueError(f'{name} must be a finite number > 1, got {scale}')
    return float(scale)


def check_upscale(in_size: tuple[int, int], size: tuple[int, int]) -> None:
    """ValueError (one line) if an (h, w) input is larger than the (H, W) output on either side, naming which:
    'is 40x32, taller than the requested 41x20'. A side may stay as it is (--size 40x64 of a 40x32 picture)."""
    (h, w), (out_h, out_w) = in_size, size
    larger = [word for word, side, out in (('wider', w, out_w), ('taller', h, out_h)) if side > out]
    if larger:
        raise ValueError(f'is {w}x{h}, {" and ".join(larger)} than the requested {out_w}x{out_h}; CiaoSR only '
                         f'upscales')


ASPECT_TOLERANCE = 0.01  # a change of the aspect ratio (relative) from which an exact size is said to stretch


@dataclass(frozen=True)
class Target:
    """The output size asked for: one of a scale (any finite factor > 1, `check_scale`), a width and/or a height in
    pixels (one side alone keeps the aspect), or the long side in pixels (the width of a landscape or square
    picture, else the height). ValueError (one line) when none or several are given, or a side is not >= 1.
    Sides may be given as whole floats (512.0, as a number field sends them); they are stored as ints."""
    scale: float | None = None
    width: float | None = None
    height: float | None = None
    long_side: float | None = None

    def __post_init__(self) -> None:
        given = [name for name, values in (('a scale', [self.scale]), ('a width/height', [self.width, self.height]),
                                           ('a long side', [self.long_side]))
                 if any(value is not None for value in values)]
        if len(given) != 1:
            raise ValueError(f'give one of a scale, a width and/or a height, or a long side (got '
                             f'{" and ".join(given) or "none"})')
        if self.scale is not None:
            object.__setattr__(self, 'scale', check_scale(self.scale))
        for name in ('width', 'height', 'long_side'):
            value = getattr(self, name)
            if value is None:
                continue
            number = (int(value) if isinstance(value, numbers.Integral) else
                      float(value) if isinstance(value, numbers.Real) else math.nan)
            if not (math.isfinite(number) and number == int(number) and number >= 1):
                raise ValueError(f'the {name.replace("_", " ")} must be a whole number of pixels >= 1, got {value}')
            object.__setattr__(self, name, int(number))

    def stretch(self, in_size: tuple[int, int], size: tuple[int, int]) -> str | None:
        """A note, when an exact width and height change the aspect ratio of an (h, w) picture going to (H, W) by more
        than ASPECT_TOLERANCE: 'stretched x3.33 across, x1.41 down (...)'; else None (one side, a long side or a
        scale keep the aspect up to the rounding of a side to whole pixels)."""
        (h, w), (out_h, out_w) = in_size, size
        if self.width is None or self.height is None or abs(out_w * h / (out_h * w) - 1) <= ASPECT_TOLERANCE:
            return None
        return (f'stretched x{out_w / w:.3g} across, x{out_h / h:.3g} down: an exact size of another shape; '
                f'--width, --height or --long-side alone keep the aspect')

    def size(self, in_size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the output of an (h, w) input."""
        h, w = in_size
        if self.scale is not None:
            return output_size((h, w), self.scale)
        width, height = self.width, self.height
        if self.long_side is not None:
            width, height = (self.long_side, None) if w >= h else (None, self.long_side)
        if width is None:
            assert height is not None  # __post_init__: a width, a height or a long side is given
            return int(height), max(1, round(w * height / h))
        if height is None:
            return max(1, round(h * width / w)), int(width)
        return int(height), int(width)


def output_format(src: str | Path, info: image_io.ImageInfo, size: tuple[int, int],
                  ext: str = 'auto') -> tuple[str, str | None]:
    """(ext, note): the format (a key of image_io.FORMATS) of the output of `src`, an image described by `info`
    (from its header) and upscaled to `size` (H, W), and why it is not the one asked for (None when it is).

    Asked for: `ext` (a key of image_io.FORMATS, any case), or with 'auto' the input's own format where we write it
    (AVIF too; else PNG: HEIC, JPEG XL, PSD, ICO, ...). PNG instead where that format cannot hold the output: alpha
    (written as PNG, except AVIF, which keeps it), 16-bit pixels for AVIF, or a side over the format's limit
    (image_io.MAX_SIDE: WebP 16383, JPEG 65535 pixels). ValueError for a format that is not written.
    """
    ext = ext.lower()
    if ext == 'auto':  # the input's own suffix where we can write it
        ext = Path(src).suffix.lower()[1:] if Path(src).suffix.lower()[1:] in image_io.FORMATS else 'png'
    if ext not in image_io.FORMATS:
        raise ValueError(f'no writer for the format {ext!r} (written: {", ".join(sorted(image_io.FORMATS))})')
    fmt = image_io.FORMATS[ext]
    if info.has_alpha and fmt not in ('PNG', 'AVIF'):
        return 'png', f'it has alpha: written as PNG, not {fmt}'
    if info.itemsize > 1 and fmt == 'AVIF':
        return 'png', 'it has 16-bit pixels: written as PNG, not AVIF'
    limit = image_io.MAX_SIDE.get(fmt)
    if limit and max(size) > limit:
        return 'png', f'{size[1]}x{size[0]} is over the {fmt} limit of {limit} pixels a side: written as PNG'
    return ext, None


def output_path(folder: Path, relative: Path, ext: str, suffix: str = 'out') -> Path:
    """Where the output of the input at `relative` (a path relative to the input folder) goes under `folder`:
    NAME_SUFFIX.EXT in the same sub-folder (NAME.EXT for an empty suffix), as Real-ESRGAN names its outputs."""
    name = f'{relative.stem}_{suffix}' if suffix else relative.stem
    return folder / relative.parent / f'{name}.{ext}'


def device_memory(device: torch.device) -> int:
    """Bytes of memory `device` has: the GPU's total memory on CUDA; on the CPU the machine's physical memory, or
    its cgroup limit (a container's, /sys/fs/cgroup/memory.max) where that is lower; 0 where it cannot be read."""
    if device.type == 'cuda':
        return torch.cuda.get_device_properties(device).total_memory
    try:
        total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return 0
    try:
        limit = Path('/sys/fs/cgroup/memory.max').read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def default_budget(device: torch.device) -> int:
    """The default memory budget in bytes: on the CPU CPU_MEMORY_SHARE of its memory (`device_memory`), at least
    CPU_BUDGET; on CUDA three quarters of the GPU's memory."""
    if device.type == 'cuda':
        return device_memory(device) * 3 // 4
    return max(CPU_BUDGET, int(CPU_MEMORY_SHARE * device_memory(device)))


def resident_bytes(device: torch.device) -> int:
    """Memory in use now, in bytes: the process's resident set on CPU (Linux; elsewhere the peak so far, an upper
    bound; 0 where neither can be read: Windows, whose plans then count from zero), tensors on the GPU."""
    if device.type == 'cuda':
        return torch.cuda.memory_allocated(device)
    try:
        with open('/proc/self/statm') as statm:
            return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
        pass
    try:
        import resource  # Unix without /proc (macOS)
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)


@dataclass
class Step:
    """One upscaling step: output size (H, W), largest LR tile side (`super_resolve` fits the tiles to the image,
    `engine.fitted_side`), tile overlap and query chunk; `whole`: the input fits one tile."""
    size: tuple
    tile: int
    overlap: int
    chunk: int
    whole: bool

    def __str__(self):
        tiling = 'whole image' if self.whole else f'tiles of up to {self.tile}, overlap {self.overlap}'
        return f'{tiling}, chunk {self.chunk}'


@dataclass
class Upscaled:
    """What `Upscaler.upscale_file` wrote: the output file (its suffix follows the format, see `output_format`),
    the input and output sizes (h, w) and (H, W), the steps, and why the format is not the one asked for (or None)."""
    dst: Path
    in_size: tuple
    size: tuple
    steps: list
    note: str | None


@dataclass(frozen=True)
class SettingNames:
    """What an Upscaler's messages call the settings a user can change, so that each surface names its own: its
    arguments in plain words (the default, for Python callers), the CLI's options (CLI_NAMES), the web app's fields."""
    budget: str = 'the budget'
    tile: str = 'the tile'
    tile_overlap: str = 'the tile overlap'


CLI_NAMES = SettingNames('--max-memory', '--tile', '--tile-overlap')


class Upscaler:
    """Runs a CiaoSR network on pictures and files within a memory budget: colour through the network, alpha by
    bicubic resampling.

    net: a network from `ciaosr_arch.load_model` (its runtime attached or not) on `device`; dtype: the autocast
    precision (torch.float16 / torch.bfloat16, None for float32; `ciaosr.cli.pick_precision` checks it against the
    device); budget: bytes of memory for the whole process (None: `default_budget`); steps: the number of upscaling
    steps of scale^(1/steps) each (multi-step synthesis); tile: the LR tile side (0: the largest that fits the
    budget, at most `speed_tile` of the net and device; else at least MIN_TILE); tile_overlap: LR pixels shared by
    neighbouring tiles (None: `default_overlap` of the tile); names: what its messages call these settings
    (`SettingNames`). ValueError for a setting out of range, or a budget that the memory in use when it is made
    (`resident_bytes`: the model, the libraries) already fills; TypeError for a budget that is not a whole number of
    bytes.

    Gray pictures, and colour ones whose three channels are equal everywhere (black-and-white photos stored as
    RGB), go through the network as gray copied to RGB and come out as the mean of its channels: exactly neutral.
    The colour under fully transparent pixels is invisible and arbitrary (black or white, depending on the
    editor): it is replaced by the colour of the nearest visible pixel first, so the visible result does not
    depend on it (no dark or light fringes). Alpha is usually a mask or a smooth ramp, not photographic texture
    the network was trained on, and running it through the network would double the work; bicubic keeps edges
    sharp enough and costs nothing.
    """

    def __init__(self, net: Net, device: torch.device, dtype: torch.dtype | None = None,
                 budget: int | None = None, steps: int = 1, tile: int = 0, tile_overlap: int | None = None,
                 names: SettingNames = SettingNames()):
        if budget is not None and not (isinstance(budget, int) and not isinstance(budget, bool)):
            raise TypeError(f'budget must be a whole number of bytes (e.g. 4 * 2 ** 30) or None, got {budget!r} '
                            '(text such as 4GB: ciaosr.cli.parse_bytes)')
        for name, value in (('steps', steps), ('tile', tile), ('tile_overlap', tile_overlap)):
            if not (isinstance(value, int) and not isinstance(value, bool) or name == 'tile_overlap' and value is None):
                raise TypeError(f'{name} must be a whole number{" or None" if name == "tile_overlap" else ""}, got '
                                f'{value!r}')
        if steps < 1:
            raise ValueError(f'steps must be at least 1, got {steps}')
        if tile != 0 and tile < MIN_TILE:
            raise ValueError(f'the tile must be 0 (automatic) or at least {MIN_TILE} LR pixels, got {tile}')
        if tile_overlap is not None and tile_overlap < 0:
            raise ValueError(f'the tile overlap must be >= 0, got {tile_overlap}')
        self.net, self.device, self.dtype = net, torch.device(device), dtype
        self.budget = default_budget(self.device) if budget is None else budget
        self.steps, self.tile, self.tile_overlap, self.names = steps, tile, tile_overlap, names
        self.base = resident_bytes(self.device)
        if self.base >= HEADROOM * self.budget and not (self.release() and self.base < HEADROOM * self.budget):
            raise ValueError(f'{names.budget} {byte_size(self.budget)} leaves no room for a picture: '
                             f'{byte_size(self.base)} of it is in use already (by this process: the model, the '
                             f'libraries), and plans keep {1 - HEADROOM:.0%} of it spare; raise it')

    def release(self) -> bool:
        """Frees what the net's runtime keeps only to be faster (OpenVINO's compiled models: a long-running web app
        piled up a gigabyte of them, and the plans that count the memory in use then refused every photo) and
        measures the memory in use again; whether anything was freed."""
        if not self.net.runtime.release():
            return False
        gc.collect()
        self.base = resident_bytes(self.device)
        return True

    def plan(self, info: image_io.ImageInfo, size: tuple[int, int]) -> list[Step]:
        """`plan_within` the memory in use; if that does not fit, again after `release` (when it freed anything)."""
        try:
            return self.plan_within(info, size)
        except MemoryError:
            if not self.release():
                raise
        return self.plan_within(info, size)

    def plan_within(self, info: image_io.ImageInfo, size: tuple[int, int]) -> list[Step]:
        """The steps that take an image described by `info` (image_io.ImageInfo, read from the header) to `size`
        (H, W) within the budget, decided before any pixel is decoded.

        Counted: the memory in use when the Upscaler was made, decoding (`info.decode_bytes`), the picture and its
        float copy (and the alpha colour fill), the previous step's output, the output (float accumulators, then the
        8/16-bit result and its encoding); the rest is the work room that `memory_plan` turns into a tile and a
        chunk (an explicit tile must fit it as the automatic one does). MemoryError (one line) if something does not
        fit, naming the largest tile that would; ValueError if the overlap is too large for the tiles that fit.
        """
        room, names = HEADROOM * self.budget, self.names
        budget_named = f'{names.budget} {byte_size(self.budget)}'  # as the messages name it: '--max-memory 2.5 GiB'
        h, w = info.height, info.width
        if self.base + info.decode_bytes > room:
            raise MemoryError(f'{w}x{h}: decoding it does not fit in {budget_named} (needs '
                              f'{byte_size(info.decode_bytes)} on top of the {byte_size(self.base)} in use); '
                              f'raise {names.budget}')
        held = self.base + info.pixel_bytes + h * w * INPUT_FLOAT_BYTES
        if info.has_alpha:
            held += info.pixel_bytes + h * w * BLEED_BYTES
        per_output_pixel = OUTPUT_FLOAT_BYTES + OUTPUT_SAMPLE_COPIES * info.channels * info.itemsize
        steps, previous, in_size, count = [], 0, (h, w), self.steps
        for k in range(1, count + 1):
            step_size = size if k == count else (round(h * (size[0] / h) ** (k / count)),
                                                 round(w * (size[1] / w) ** (k / count)))
            fixed = held + previous + per_output_pixel * step_size[0] * step_size[1]
            explicit = min(self.tile, max(in_size))  # a tile larger than the image runs as the whole image
            # what a given tile needs follows its area, min(t, h) x min(t, w) pixels: a strip's, far less than t^2
            planned = math.isqrt(min(explicit, in_size[0]) * min(explicit, in_size[1]) - 1) + 1 if explicit else 0
            try:
                tile, chunk = memory_plan(self.net, room - fixed, half=self.dtype is not None, tile=planned)
                tile = explicit or tile
            except MemoryError:
                fits = largest_tile(self.net, room - fixed)
                if explicit and fits >= MIN_TILE:
                    raise MemoryError(f'{names.tile} {self.tile} does not fit in {budget_named} for this image: the '
                                      f'largest tile that fits is {fits}; lower {names.tile} or raise '
                                      f'{names.budget}') from None
                smallest = tile_bytes(self.net, explicit or MIN_AUTO_TILE)
                needed = byte_size((fixed + smallest) / HEADROOM, up=True)
                raise MemoryError(f'output {step_size[1]}x{step_size[0]} does not fit in {budget_named}: it needs at '
                                  f'least {needed} (the model, input and output take {byte_size(fixed)}, the '
                                  f'{"given" if explicit else "smallest"} tile {byte_size(smallest)}, and plans keep '
                                  f'{1 - HEADROOM:.0%} spare); raise {names.budget} or lower the scale') from None
            whole = tile >= max(in_size)
            overlap = self.tile_overlap
            if overlap is None:
                overlap = default_overlap(tile)
            elif not whole and 2 * overlap > tile:
                cap = speed_tile(self.net, self.device)
                limit = f', at most {cap} on {self.device.type.upper()}' if cap else ''
                raise ValueError(f'{names.tile_overlap} {overlap} needs LR tiles of at least {2 * overlap} pixels, '
                                 + (f'but {names.tile} is {tile}; lower {names.tile_overlap} or raise {names.tile}'
                                    if self.tile else
                                    f'but the automatic tile is {tile} here (the largest that {budget_named} allows'
                                    f'{limit}); lower {names.tile_overlap}, or give {names.tile}'))
            steps.append(Step(step_size, tile, overlap, chunk, whole))
            previous, in_size = INPUT_FLOAT_BYTES * step_size[0] * step_size[1], step_size
        return steps

    def upscale(self, picture: image_io.Picture, steps: list[Step],
                progress: Progress | None = None) -> image_io.Picture:
        """Picture upscaled by `steps` (from `plan`) to steps[-1].size, with the same channels, dtype and ICC
        profile; `progress(done, total)` is called as the output queries of each step are decoded. ValueError if
        the network's output is not finite: nothing to write."""
        pixels = picture.pixels
        colour = bleed_colour(pixels[..., :-1], pixels[..., -1]) if picture.has_alpha else pixels
        neutral = picture.is_gray or (np.array_equal(colour[..., 0], colour[..., 1])
                                      and np.array_equal(colour[..., 1], colour[..., 2]))
        if neutral:
            colour = colour[..., :1]
        image = to_tensor(colour, self.device).expand(-1, 3, -1, -1)
        del colour
        for step in steps:
            tile = 0 if step.whole else step.tile  # 0: whole at any size (a tile must be MIN_TILE; images may be less)
            with torch.autocast(self.device.type, self.dtype) if self.dtype else nullcontext():
                image = super_resolve(self.net, image, size=step.size, chunk=step.chunk, tile=tile,
                                      tile_overlap=step.overlap, progress=progress)
        if not torch.isfinite(image).all():
            raise ValueError('the network produced NaN or infinite values, so nothing was written '
                             '(a broken checkpoint, or an overflow in fp16)')
        colour = image[0].mean(0, keepdim=True) if neutral else image[0]
        del image
        out = np.empty((*steps[-1].size, pixels.shape[2]), pixels.dtype)
        to_pixels(colour, out=out[..., :pixels.shape[2] - picture.has_alpha])  # neutral: one channel to each
        del colour
        if picture.has_alpha:
            out[..., -1] = resize_alpha(pixels[..., -1], steps[-1].size)
        return image_io.Picture(out, picture.icc_profile, picture.exif)

    def upscale_file(self, src: str | Path, dst: str | Path, target: Target, info: image_io.ImageInfo | None = None,
                     progress: Progress | None = None) -> Upscaled:
        """Upscale the image file `src` to `target` and write it to `dst` atomically (never half-written).

        The header is read once: `info` is `src`'s header from a caller that planned with it (`image_io.probe_image`),
        else it is read here. From it, before any pixel is decoded: the output size (`check_upscale`), the format
        (dst's suffix, or PNG where that format cannot hold the output, `output_format`: then dst's suffix becomes
        .png and `Upscaled.note` says why) and the memory plan (`plan`). Then the file is read, upscaled (`upscale`,
        with `progress`) and written in the input's bit depth, alpha and ICC profile. Raises ImageReadError,
        ValueError (a downscale, an output that would replace the input, a file that changed since its header was
        read, a non-finite output) or MemoryError, each with a one-line message; nothing is written then.
        """
        src, dst = Path(src), Path(dst)
        if info is None:
            info = image_io.probe_image(src)
        in_size = info.height, info.width
        size = target.size(in_size)
        check_upscale(in_size, size)
        ext, note = output_format(src, info, size, dst.suffix[1:])
        if dst.suffix.lower() != f'.{ext}':
            dst = dst.with_suffix(f'.{ext}')
        if dst.resolve() == src.resolve():
            raise ValueError(f'its output {dst} is the input file; refusing to overwrite it')
        steps = self.plan(info, size)
        picture = image_io.read_image(src)
        if picture.pixels.shape != (*in_size, info.channels) or picture.pixels.itemsize != info.itemsize:
            raise ValueError('the file changed after its header was read; run it again')
        result = self.upscale(picture, steps, progress)
        del picture
        dst.parent.mkdir(parents=True, exist_ok=True)
        image_io.write_atomic(dst, image_io.encode_image(result, ext))
        return Upscaled(dst, in_size, size, steps, note)


def bleed_colour(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
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


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Alpha [h, w] (uint8/uint16) resampled bicubically (OpenCV) to size (H, W), rounded and clipped to its range."""
    return cv2.resize(np.ascontiguousarray(alpha), (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
