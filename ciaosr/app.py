"""A local web app for CiaoSR: drop photos, pick any scale, compare before and after, download.

    ciaosr-app [--output results] [--model CHECKPOINT ...] [--device auto] [--port 7860]
    (= python inference/app.py ...)

It serves http://127.0.0.1:PORT only (never a share link) and opens it in the browser. It answers only its own
page (`RequestGuard`: Host and Origin headers, served files), takes only image uploads of bounded size
(`accept_only_images`, UPLOAD_LIMIT), and a taken --port is one line (exit status 2). Photos go through the
picture pipeline that the CLI (`ciaosr.upscale`, `ciaosr-upscale`) runs, `ciaosr.pipeline`: the same output
names and formats, size checks, memory plan, engine, reader and atomic writer (`Upscaler.upscale_file`, with the
page's progress function), one photo at a time and one job at a time (a queue with a concurrency limit of 1), so
the files the page offers for download are the files the CLI writes for the same settings.

Why Gradio (the extra `app`: `pip install "ciaosr[app]"`): it is the maintained, widely used library
for local ML demos; it has what this page needs as stock components (multi-file drop, a before/after
`ImageSlider` with wheel zoom, per-job progress, file downloads, a job queue with concurrency limits) and
serves its own bundled front end, so it works with no network. Offline by construction: analytics and
the version check are off, the Hugging Face hub is offline, the theme uses system fonts (no Google
fonts), no model is ever downloaded, and share=False.

Everything it writes goes under --output (default `results` in the working directory, as in the README's
commands): each run gets a folder `YYYYMMDD-HHMMSS/` with the CLI's `NAME_out.EXT` files and, for several
photos, a zip of them. Temporary files (Gradio's uploads and the copies it serves, the comparison views,
matplotlib's cache) live in a hidden `--output/.app-cache-XXXXXXXX/` folder that is removed when the app stops
(Ctrl-C or SIGTERM).
"""
import argparse
import contextlib
import gc
import hashlib
import importlib.util
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from ciaosr_arch import CheckpointError, load_model
from ciaosr_arch.engine import Net
from ciaosr_arch.errors import error_line
from ciaosr_arch.files import atomic_file
from ciaosr_arch.runtime import openvino_version, use_runtime
from ciaosr_arch.shipped import SHIPPED_MODELS, shipped_weights

from . import image_io, pipeline
from .cli import (
    OneLineParser,
    UsageError,
    console_script_setup,
    cpu_path_line,
    memory_warning,
    parse_bytes,
    pick_device,
    pick_precision,
    prepare_output,
)

if TYPE_CHECKING:
    import gradio as gr

CACHE_PREFIX = '.app-cache-'  # a folder of this process's temporary files (uploads, served copies, views), in --output
TARGETS = ('scale', 'width', 'height', 'long side')
APP_NAMES = pipeline.SettingNames(budget='the memory budget')  # what messages call the page's "Memory budget" field
PREVIEW_SIDE = 2048  # the fitted comparison is at most this long (the 1:1 detail is always full resolution)
DETAIL_SIDE = 384  # side of the 1:1 detail view in output pixels
# CSS font lists of system fonts (plain strings: Gradio loads no font files for them).
SYSTEM_FONTS = ['system-ui', '-apple-system', "'Segoe UI'", 'Roboto', 'sans-serif']
SYSTEM_MONO_FONTS = ['ui-monospace', 'Menlo', 'Consolas', 'monospace']
REPORT_SECONDS = 0.5  # progress within a photo goes to the page at most this often
SCALE_SLIDER = (1.1, 16)  # the box takes any scale > 1; the slider covers the common range
CSS = '#detail img { object-fit: none !important; image-rendering: pixelated; }'
HOST = '127.0.0.1'  # the only address the app listens on
LOOPBACK_NAMES = ('127.0.0.1', 'localhost', '[::1]')  # what a browser may call it in Host and Origin headers
UPLOAD_LIMIT = 2 ** 30  # bytes of one upload request (all its photos), refused before anything is stored
FILE_ROUTE = re.compile(r'/file[=/](.*)')  # Gradio's routes that serve files by path


def build_parser() -> argparse.ArgumentParser:
    """The app's command line."""
    parser = OneLineParser(description='A local web app for CiaoSR upscaling (http://127.0.0.1 only).')
    parser.add_argument('-o', '--output', default='results',
                        help='folder for everything the app writes (default: ./results); one sub-folder per run')
    parser.add_argument('--model', action='append', default=[],
                        help='a checkpoint to offer besides the shipped models (repeatable; the first is selected)')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    parser.add_argument('--port', type=int, help='port on 127.0.0.1 (default: the first free one from 7860)')
    parser.add_argument('--no-browser', action='store_true', help='do not open the page in a browser')
    return parser


class Stopped(Exception):
    """Raised within a run, at its next decoded chunk, after the page's Stop button (`AppSession.stop`)."""


@dataclass
class Options:
    """What the page asks for: target ('scale', 'width', 'height' or 'long side') and its value, model
    (a shipped name or a checkpoint path), precision ('fp32', 'bf16', 'fp16' or 'int8') and memory ('2.5GB')."""
    target: str
    value: float
    model: str
    precision: str
    memory: str


@dataclass
class Photo:
    """One uploaded photo's plan (`plan`): where its output goes and its header (read once: the upscale uses it),
    its output size (H, W), or the problem that stops it (then dst and info are None and the size is (0, 0))."""
    src: Path
    dst: Path | None = None
    info: image_io.ImageInfo | None = None
    size: tuple[int, int] = (0, 0)
    problem: str | None = None


@dataclass
class Outcome:
    """A finished run: one line per photo, the outputs as (name, input, output), the zip and the run folder (None
    when nothing was written)."""
    lines: list[str] = field(default_factory=list)
    outputs: list[tuple[str, Path, Path]] = field(default_factory=list)
    archive: Path | None = None
    folder: Path | None = None


class AppSession:
    """What the page works with while the app runs: one device, the models it offers, the network of the last run
    (kept for the next), and the output folder that holds a folder per run."""

    def __init__(self, output: str | Path, device: torch.device, extra_models: Sequence[str | Path] = ()) -> None:
        self.output = Path(output).resolve()
        self.device = device
        self.models = {}  # spec -> label, in the order offered
        for name, model in SHIPPED_MODELS.items():
            try:
                shipped_weights(name)
            except CheckpointError:
                continue  # not shipped in this checkout (e.g. 'real' before it is trained)
            self.models[name] = f'{name} ({model.use})'
        for path in extra_models:
            self.models[str(Path(path).resolve())] = str(path)
        self.default_model = str(Path(extra_models[0]).resolve()) if extra_models else 'real'  # photos: real-world
        self._net: tuple[tuple[str, bool], Net] | None = None  # ((spec, int8), network) of the last model used
        # Runs are numbered as they are asked for (`request`); `stop` stops every run asked for so far
        self.lock, self.requested, self.stopped_through = threading.Lock(), 0, 0

    def request(self) -> int:
        """The number of a new run, taken when it is asked for (the page's Upscale, before the job waits in the
        queue), for `run`."""
        with self.lock:
            self.requested += 1
            return self.requested

    def stop(self) -> None:
        """Stop every run asked for so far: the one in progress at its next decoded chunk (a fraction of a second on
        a CPU; a tile's encode or a first conversion of the graphs is finished first), and those waiting in the queue
        before their first photo. A run asked for later is not affected."""
        with self.lock:
            self.stopped_through = self.requested

    def precisions(self) -> list[str]:
        """Precisions this device supports, as offered on the page (fp32 first): the autocast ones, and the CLI's
        int8 decode on a CPU where OpenVINO is installed."""
        offered = ['fp32']
        for name in ('bf16', 'fp16', 'int8'):
            try:
                pick_precision(self.device, **{name: True})
                if name != 'int8' or openvino_version() is not None:
                    offered.append(name)
            except UsageError:
                pass
        return offered

    def default_memory(self) -> str:
        """The CLI's default --max-memory for this device (`pipeline.default_budget`), as text."""
        return f'{pipeline.default_budget(self.device) / 2 ** 30:.1f}GB'

    def network(self, spec: str, int8: bool = False) -> Net:
        """The network of a model spec, loaded once (only the last one used is kept), on the CLI's default runtime
        (`--runtime auto`: the faster runtime for this CPU's kind), with its int8 decode if `int8`."""
        if self._net is None or self._net[0] != (spec, int8):
            self._net = None
            gc.collect()  # the net and its OpenVINO runtime refer to each other: freed now, not at some later GC
            try:
                net = load_model(spec, device=self.device)
                use_runtime(net, 'auto', int8=int8)
            except (CheckpointError, RuntimeError) as err:  # RuntimeError: int8 where OpenVINO does not run
                raise UsageError(str(err)) from None
            self._net = ((spec, int8), net)
        return self._net[1]

    def settings(self, options: Options) -> tuple[pipeline.Target, int, torch.dtype | None]:
        """(pipeline.Target, memory budget in bytes, autocast dtype) of these options; UsageError (one line) if one
        is not valid: the scale is checked by the pipeline's own check, as the CLI's --scale is."""
        if options.target not in TARGETS:
            raise UsageError(f'unknown output size choice {options.target!r}')
        try:
            target = pipeline.Target(**{options.target.replace(' ', '_'): float(
                options.value if options.value is not None else 'nan')})
        except ValueError as err:
            raise UsageError(str(err)) from None
        if options.model not in self.models:
            raise UsageError(f'unknown model {options.model!r}')
        if options.precision not in self.precisions():
            raise UsageError(f'{options.precision} is not supported on this device')
        try:
            budget = parse_bytes(options.memory, APP_NAMES.budget)
        except ValueError as err:
            raise UsageError(str(err)) from None
        flags = {} if options.precision == 'fp32' else {options.precision: True}
        return target, budget, pick_precision(self.device, **flags)

    def new_folder(self) -> Path:
        """A fresh run folder under the output folder, named by the time (with -2, -3 ... if taken)."""
        stamp = time.strftime('%Y%m%d-%H%M%S')
        for attempt in range(1, 1000):
            folder = self.output / (stamp if attempt == 1 else f'{stamp}-{attempt}')
            try:
                folder.mkdir(parents=True)
                return folder
            except FileExistsError:
                continue
        raise UsageError(f'cannot make a run folder in {self.output}')

    def run(self, files: Sequence[str | Path], options: Options,
            report: Callable[[float, str], object] | None = None, number: int | None = None) -> Outcome:
        """Upscale `files` (paths) as the CLI does; `report(fraction, text)` says how far it is (see Meter).

        Settings problems raise UsageError before any photo is touched; a photo that fails gets the CLI's
        one-line message and the others go on. `number`: the run's `request` (None: a new one). After `stop`, the run
        ends at its next decoded chunk: the photos done are kept, the one in progress is not written, the rest are not
        started (each named in the lines). A budget above the device's memory adds the CLI's warning as the first
        line. A run that writes nothing leaves no run folder (Outcome.folder None) and says so.
        """
        number = self.request() if number is None else number
        target, budget, dtype = self.settings(options)
        int8 = options.precision == 'int8'
        net = self.network(options.model, int8)
        try:
            upscaler = pipeline.Upscaler(net, self.device, dtype, budget, names=APP_NAMES)
        except ValueError as err:  # a budget that the memory in use already fills
            raise UsageError(str(err)) from None
        warning = memory_warning(budget, self.device, APP_NAMES.budget)
        folder = self.new_folder()
        outcome = Outcome(lines=[warning] if warning else [], folder=folder)
        if self.device.type == 'cpu':
            outcome.lines.append(cpu_path_line(net.runtime.name, dtype, int8))
        photos = plan(files, folder, target)
        meter = Meter([(photo.src.name, photo.size[0] * photo.size[1]) for photo in photos], report)

        def asked_to_stop() -> bool:
            return number <= self.stopped_through

        def progress(done: int, total: int) -> None:
            if asked_to_stop():
                raise Stopped
            meter.update(done, total)

        seconds, failed, stopped_at = 0.0, 0, None
        for index, photo in enumerate(photos):
            if asked_to_stop():
                stopped_at = index
                break
            meter.start_photo(index)
            start = time.perf_counter()
            try:
                if photo.dst is None:  # plan found a problem
                    raise ValueError(photo.problem)
                done = upscaler.upscale_file(photo.src, photo.dst, target, photo.info, progress)
            except Stopped:  # nothing of this photo was written: the writer runs after its last chunk
                meter.end_photo(done=False)
                outcome.lines.append(f'STOPPED {photo.src.name}: not saved')
                stopped_at = index + 1
                break
            except Exception as err:  # noqa: BLE001  (one line per failed photo; the batch goes on)
                meter.end_photo(done=False)
                outcome.lines.append(f'FAILED {photo.src.name}: {failure_message(err)}')
                failed += 1
                continue
            meter.end_photo(done=True)
            seconds += time.perf_counter() - start
            (h, w), (out_h, out_w) = done.in_size, done.size
            outcome.lines.append(f'{photo.src.name} -> {done.dst.name}: {w}x{h} -> {out_w}x{out_h} '
                                 f'in {time.perf_counter() - start:.1f} s')
            outcome.outputs.append((photo.src.name, photo.src, done.dst))
        if stopped_at is not None and stopped_at < len(photos):
            outcome.lines.append(f'not started: {", ".join(photo.src.name for photo in photos[stopped_at:])}')
        if len(outcome.outputs) > 1:
            outcome.archive = write_zip(folder / f'ciaosr_{folder.name}.zip',
                                        [dst for _, _, dst in outcome.outputs])
        stopped = len(photos) - len(outcome.outputs) - failed
        counts = f'{len(outcome.outputs)} done, {failed} failed' + (f', {stopped} stopped' if stopped else '')
        if not outcome.outputs:  # the folder is empty: no run folder is left, none is announced
            folder.rmdir()
            outcome.folder = None
            outcome.lines.append(f'{counts}; nothing was saved')
            return outcome
        outcome.lines.append(f'{counts}, {seconds / len(outcome.outputs):.1f} s per image; saved in {folder}')
        return outcome


class Meter:
    """How far a run is, for `report(fraction, text)`: photos weighted by their output pixels, and the time left
    from the time per output pixel so far. Text: 'NAME (i of n) - about N s left'. Reports within a photo come at
    most every REPORT_SECONDS."""

    def __init__(self, photos: Sequence[tuple[str, int]], report: Callable[[float, str], object] | None) -> None:
        self.names = [name for name, _ in photos]
        self.pixels = [pixels for _, pixels in photos]
        self.report = report
        self.total = sum(self.pixels)
        self.done = 0  # output pixels of finished photos
        self.index, self.part = 0, 0.0
        self.started = time.perf_counter()
        self.last = 0.0

    def start_photo(self, index: int) -> None:
        """Photo `index` begins."""
        self.index, self.part = index, 0.0
        self._send()

    def update(self, done: int, total: int) -> None:
        """`done` of `total` output queries of the current photo are decoded."""
        self.part = done / total if total else 0.0
        if time.perf_counter() - self.last >= REPORT_SECONDS:
            self._send()

    def end_photo(self, done: bool) -> None:
        """The current photo is finished (`done`) or failed (its pixels leave the total)."""
        if done:
            self.done += self.pixels[self.index]
        else:
            self.total -= self.pixels[self.index]
        self.part = 0.0

    def _send(self):
        if not self.report:
            return
        self.last = time.perf_counter()
        done = self.done + self.part * self.pixels[self.index]
        fraction = (self.index + self.part) / len(self.names)
        text = f'{self.names[self.index]} ({self.index + 1} of {len(self.names)})'
        self.report(fraction, text + time_left(self.last - self.started, done, self.total - done))


def plan(files: Iterable[str | Path], folder: Path, target: pipeline.Target) -> list[Photo]:
    """A Photo per uploaded file (paths), in order, upscaled to `target` (pipeline.Target) into `folder`.

    Each header is read here, once: it gives the output size and the output's name and format as the CLI's
    `--ext auto` picks them (NAME_out.EXT, `pipeline.output_format`), and the upscale uses it. A file whose header
    cannot be read gets the reader's message; uploads sit in separate folders, so a second photo whose output name
    is taken in this run gets a problem too.
    """
    photos, claimed = [], {}
    for src in map(Path, files):
        try:
            info = image_io.probe_image(src)
        except image_io.ImageReadError as err:
            photos.append(Photo(src, problem=str(err)))
            continue
        size = target.size((info.height, info.width))
        dst = pipeline.output_path(folder, Path(src.name), pipeline.output_format(src, info, size)[0])
        if dst in claimed:
            photos.append(Photo(src, problem=f'its output {dst.name} is also the output of another photo named '
                                             f'{claimed[dst].name}; rename one of them'))
            continue
        claimed[dst] = src
        photos.append(Photo(src, dst, info, size))
    return photos


def failure_message(err: BaseException) -> str:
    """The CLI's one-line message for an exception (its type named when it is not an expected kind)."""
    return error_line(err, named=not isinstance(err, (image_io.ImageReadError, ValueError, MemoryError)))


def time_left(seconds: float, done_pixels: float, left_pixels: float) -> str:
    """' - about N s left' from the time per output pixel so far ('' until a first output pixel is done)."""
    if not done_pixels or not seconds:
        return ''
    left = seconds / done_pixels * left_pixels
    return f' - about {left:.0f} s left' if left < 120 else f' - about {left / 60:.0f} min left'


def write_zip(path: Path, files: Iterable[Path]) -> Path:
    """A zip of `files` (stored, images are compressed already) at `path`, written whole or not at all
    (`atomic_file`)."""
    with atomic_file(path) as out, zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as archive:
        for file in files:
            archive.write(file, file.name)
    return path


def read_own_output(path: str | Path) -> np.ndarray:
    """Pixels [H, W, C] (C 1-4, uint8 or uint16, RGB order) of an image file that this app wrote.

    PIL's decompression-bomb limit (89.5 MP, `image_io.read_image`) guards against files from elsewhere; an
    output that the memory budget allowed may be larger, so OpenCV reads it (its limit is 2^30 pixels), and
    image_io what OpenCV cannot decode. ImageReadError if neither can.
    """
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as err:
        raise image_io.ImageReadError(f'cannot read the file ({err.strerror})') from None
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        return image_io.read_image(path).pixels
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    if pixels.shape[2] in (3, 4):
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB if pixels.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return pixels


@lru_cache(maxsize=2)
def display_pair(src: str | Path, dst: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(before, after) 8-bit RGB or RGBA arrays of equal size for the browser (`image_io.as_rgb`: 16-bit rounded as
    the writer does, gray repeated): the input resized bicubically to the output, and the output (this app's own
    file, `read_own_output`); ImageReadError if either cannot be read."""
    after = image_io.as_rgb(read_own_output(dst), alpha=True)
    before = image_io.as_rgb(image_io.read_image(src).pixels, alpha=True)  # the writer keeps gray and alpha
    before = cv2.resize(before, (after.shape[1], after.shape[0]), interpolation=cv2.INTER_CUBIC)
    return before, after


def preview(pair: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """The pair shrunk (area average) to at most PREVIEW_SIDE on the long side, for the fitted comparison."""
    h, w = pair[1].shape[:2]
    factor = PREVIEW_SIDE / max(h, w)
    if factor >= 1:
        return pair
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return tuple(cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in pair)


def detail(pair: tuple[np.ndarray, np.ndarray], x_percent: float, y_percent: float) -> tuple[np.ndarray, ...]:
    """A DETAIL_SIDE square (or the whole image, if smaller) of the pair at 1:1, centred at the given point."""
    h, w = pair[1].shape[:2]
    side_h, side_w = min(DETAIL_SIDE, h), min(DETAIL_SIDE, w)
    top = min(max(round(h * y_percent / 100 - side_h / 2), 0), h - side_h)
    left = min(max(round(w * x_percent / 100 - side_w / 2), 0), w - side_w)
    return tuple(image[top:top + side_h, left:left + side_w] for image in pair)


class ComparisonError(Exception):
    """The before/after views of a written output cannot be made (one line; the output file itself is fine)."""


def comparison_pair(name: str | None, state: dict[str, tuple[str, str]] | None
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """`display_pair` of the output called `name` in `state` ({name: (input path, output path)}); None for no such
    output. ComparisonError (one line) when the files cannot be read back or the pair does not fit in memory."""
    if not name or not state or name not in state:
        return None
    try:
        return display_pair(*state[name])
    except (image_io.ImageReadError, MemoryError, cv2.error) as err:
        raise ComparisonError(f'no comparison for {name}: {failure_message(err)}') from None


def comparison(name: str | None, x_percent: float, y_percent: float, state: dict[str, tuple[str, str]] | None
               ) -> tuple[tuple[np.ndarray, ...] | None, tuple[np.ndarray, ...] | None]:
    """(fitted pair, 1:1 detail pair) of `comparison_pair`, the detail centred at (x_percent, y_percent); (None,
    None) for no such output; its ComparisonError."""
    pair = comparison_pair(name, state)
    return (None, None) if pair is None else (preview(pair), detail(pair, x_percent, y_percent))


def view_file(image: np.ndarray, folder: Path) -> str:
    """Path of a PNG of `image` ((H, W, 3 or 4) uint8 RGB or RGBA) in `folder`, named by the SHA-256 of its bytes
    and written only if absent, at once (`atomic_file`); an existing one is touched instead.

    The page's views go to Gradio as such paths, not arrays: Gradio encodes an array into its cache under a name
    made from its bytes and rewrites that file in place each time the same image is sent (twice in one response
    when the 1:1 detail is the whole image), and the page, fetching it meanwhile, got a truncated file
    (net::ERR_CONTENT_LENGTH_MISMATCH, a broken image; gradio 6.31). A file inside Gradio's temporary folder it
    serves as it is and deletes with its own files (`delete_cache`, by age: hence the touch).
    """
    code = cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
    data = cv2.imencode('.png', cv2.cvtColor(image, code))[1].tobytes()
    path = folder / f'{hashlib.sha256(data).hexdigest()}.png'
    try:
        os.utime(path)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as file:
            file.write(data)
    return str(path)


def build_app(session: AppSession) -> 'gr.Blocks':
    """The Gradio page (Blocks) for an AppSession, with its queue set to one job at a time. The views it shows are
    PNG files (`view_file`) in a `views` folder of Gradio's temporary folder (GRADIO_TEMP_DIR)."""
    import gradio as gr
    from gradio.utils import get_upload_folder

    tracker = gr.Progress()  # Gradio passes progress to a parameter whose default is a Progress
    views_folder = Path(get_upload_folder()) / 'views'

    def view_files(views: tuple[np.ndarray, ...] | None) -> tuple[str, ...] | None:
        return None if views is None else tuple(view_file(image, views_folder) for image in views)

    def upscale(files, target, scale, pixels, model, precision, memory, x_percent, y_percent, number,
                progress=tracker):
        if not files:
            raise gr.Error('Drop one or more photos first.', print_exception=False)
        value = scale if target == 'scale' else pixels
        try:
            outcome = session.run(files, Options(target, value, model, precision, memory),
                                  lambda fraction, text: progress(fraction, desc=text), number)
        except UsageError as err:  # the page shows it; Gradio would also print its traceback on the terminal
            raise gr.Error(str(err), print_exception=False) from None
        names = [name for name, _, _ in outcome.outputs]
        downloads = ([str(outcome.archive)] if outcome.archive else []) + [str(dst) for _, _, dst in outcome.outputs]
        state = {name: (str(src), str(dst)) for name, src, dst in outcome.outputs}
        views = (None, None)
        if names:
            try:
                views = comparison(names[0], x_percent, y_percent, state)
            except ComparisonError as err:  # the files are written: the log and the downloads still come
                outcome.lines.append(str(err))
        return ('\n'.join(outcome.lines), downloads or None,
                gr.update(choices=names, value=names[0] if names else None), state, *map(view_files, views))

    @contextlib.contextmanager
    def page_errors():  # a ComparisonError as Gradio's error message
        try:
            yield
        except ComparisonError as err:
            raise gr.Error(str(err), print_exception=False) from None

    def compare(name, x_percent, y_percent, state):
        with page_errors():
            return tuple(map(view_files, comparison(name, x_percent, y_percent, state)))

    def zoom(name, x_percent, y_percent, state):  # the 1:1 detail only: no fitted views made
        with page_errors():
            pair = comparison_pair(name, state)
        return None if pair is None else view_files(detail(pair, x_percent, y_percent))

    def show_target(target):
        by_scale = target == 'scale'
        return (gr.update(visible=by_scale), gr.update(visible=by_scale),
                gr.update(visible=not by_scale, label=f'{target} (pixels)'))

    with gr.Blocks(title='CiaoSR upscaler', analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown('# CiaoSR upscaler\nDrop photos, choose the size, press **Upscale**. Results are saved in '
                    f'`{session.output}` and can be downloaded below at full resolution, in the format they came in.')
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label='Photos (drop one or many)', file_count='multiple',
                                file_types=list(image_io.IMAGE_SUFFIXES), elem_id='photos')
                target = gr.Radio(list(TARGETS), value='scale', label='Output size by', elem_id='target')
                with gr.Row():
                    scale_slider = gr.Slider(*SCALE_SLIDER, value=4, step=0.1, label='Scale',
                                             elem_id='scale-slider', scale=2)
                    scale = gr.Number(4, minimum=1, step=0.1, label='Scale (any number > 1)', elem_id='scale',
                                      scale=1)
                pixels = gr.Number(3840, minimum=1, precision=0, label='width (pixels)', visible=False,
                                   elem_id='pixels')
                model = gr.Dropdown([(label, spec) for spec, label in session.models.items()],
                                    value=session.default_model, label='Model', elem_id='model')
                with gr.Row():
                    precision = gr.Radio(session.precisions(), value='fp32', label='Precision', elem_id='precision')
                    memory = gr.Textbox(session.default_memory(), label='Memory budget', elem_id='memory',
                                        info='as the CLI\'s --max-memory, e.g. 4GB')
                with gr.Row():
                    run = gr.Button('Upscale', variant='primary', elem_id='run', scale=3)
                    stop = gr.Button('Stop', variant='stop', elem_id='stop', scale=1)
            with gr.Column(scale=2):
                log = gr.Textbox(label='Log', lines=4, interactive=False, elem_id='log')
                downloads = gr.File(label='Download (full resolution)', file_count='multiple', interactive=False,
                                    elem_id='downloads')
                choice = gr.Dropdown([], label='Compare', elem_id='compare')
                slider = gr.ImageSlider(label='Before (bicubic) / after (CiaoSR): drag the line, scroll to zoom',
                                        type='filepath', interactive=False, elem_id='slider',
                                        buttons=['fullscreen'])
                with gr.Row():
                    x_percent = gr.Slider(0, 100, value=50, step=1, label='1:1 detail: x (%)')
                    y_percent = gr.Slider(0, 100, value=50, step=1, label='1:1 detail: y (%)')
                zoomed = gr.ImageSlider(label='1:1 detail (one output pixel per screen pixel)', type='filepath',
                                        interactive=False, elem_id='detail', buttons=['fullscreen'],
                                        height=DETAIL_SIDE + 40, max_height=DETAIL_SIDE + 40)
        state = gr.State({})
        number = gr.State(0)  # the run's number (`AppSession.request`)
        scale_slider.input(lambda v: v, scale_slider, scale, queue=False)
        scale.input(lambda v: min(max(v or 1, SCALE_SLIDER[0]), SCALE_SLIDER[1]), scale, scale_slider, queue=False)
        target.change(show_target, target, [scale_slider, scale, pixels], queue=False)
        # the run's number is taken at the click, outside the queue, so that a Stop pressed while it waits reaches it
        run.click(session.request, None, number, queue=False).then(
            upscale, [files, target, scale, pixels, model, precision, memory, x_percent, y_percent, number],
            [log, downloads, choice, state, slider, zoomed], concurrency_limit=1, concurrency_id='upscale',
            show_progress_on=log)
        # not queued: it runs while the job it stops holds the queue; the job then ends by itself, saying so
        stop.click(session.stop, None, None, queue=False)
        # .input, not .change: upscale sets `choice` and its views itself
        choice.input(compare, [choice, x_percent, y_percent, state], [slider, zoomed])
        for control in (x_percent, y_percent):
            control.release(zoom, [choice, x_percent, y_percent, state], zoomed)
    demo.queue(default_concurrency_limit=1)
    return demo


class RequestGuard:
    """ASGI wrapper of the app that lets through only what the app's own page, in the user's browser, sends.

    Refused with 403 and no CORS headers, before Gradio sees them: a Host header that is not this server's
    loopback address and port (127.0.0.1, localhost or [::1], with the port; DNS rebinding), an
    Origin header that is not the app's own (a page on another site posting through the user's browser), and
    a request for a file (Gradio's /file= routes) outside `served`, the folder of this process's uploads and
    served copies. A multipart upload without Content-Length gets 411 and one over UPLOAD_LIMIT bytes 413,
    before any byte is read.
    """

    def __init__(self, app, served):
        self.app = app
        self.served = Path(served).resolve()

    async def __call__(self, scope, receive, send):
        if scope['type'] not in ('http', 'websocket'):
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope['type'] == 'websocket':
            await send({'type': 'websocket.close', 'code': 1008})
        else:
            from starlette.responses import PlainTextResponse
            await PlainTextResponse(refusal[1], status_code=refusal[0])(scope, receive, send)

    def refusal(self, scope):
        """(HTTP status, reason) for a request (an ASGI scope) that is refused, else None."""
        from starlette.datastructures import Headers

        headers = Headers(scope=scope)
        own = {f'{name}:{scope["server"][1]}' for name in LOOPBACK_NAMES}  # the app listens on HOST only
        if headers.get('host', '').lower() not in own:
            return 403, 'unknown Host: this app answers only to its own address'
        origin = headers.get('origin')
        if origin is not None and origin.lower() not in {f'http://{address}' for address in own}:
            return 403, 'cross-origin request refused'
        served = FILE_ROUTE.search(scope['path'])
        if served and not Path(os.path.realpath(served[1])).is_relative_to(self.served):
            return 403, 'file not served'
        if scope.get('method') == 'POST' and headers.get('content-type', '').startswith('multipart/'):
            length = headers.get('content-length', '')
            if not length.isdigit():
                return 411, 'an upload must state its Content-Length'
            if int(length) > UPLOAD_LIMIT:
                return 413, f'uploads are limited to {UPLOAD_LIMIT / 2 ** 30:.0f} GiB per request'
        return None


def accept_only_images() -> None:
    """Make Gradio's multipart parser refuse, as each file part begins, a file whose name does not end in one of
    image_io.IMAGE_SUFFIXES: Gradio removes what the request stored so far and answers 400 with the message."""
    import gradio.route_utils
    import gradio.routes
    from starlette.formparsers import MultiPartException

    parser = gradio.route_utils.GradioMultiPartParser
    if getattr(parser, 'images_only', False):
        return

    class ImageUploadParser(parser):
        images_only = True

        def on_headers_finished(self):
            super().on_headers_finished()
            upload = self._current_part.file
            if upload is not None and Path(upload.filename or '').suffix.lower() not in image_io.IMAGE_SUFFIXES:
                raise MultiPartException(
                    f'{upload.filename}: not an accepted image ({", ".join(image_io.IMAGE_SUFFIXES)})')

    # gradio.routes imports the parser by name: both names are replaced (it is not in gradio.routes' exports)
    gradio.route_utils.GradioMultiPartParser = gradio.routes.GradioMultiPartParser = ImageUploadParser  # pyright: ignore[reportPrivateImportUsage]


def check_port(port: int) -> None:
    """UsageError (one line naming the port and --port) unless `port` can be listened on at HOST now: nothing listens
    there (connections of a stopped server still in TIME_WAIT do not count: the probe sets SO_REUSEADDR, as the
    server, uvicorn, does)."""
    if not 1 <= port <= 65535:
        raise UsageError(f'--port must be between 1 and 65535, got {port}')
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as err:
            raise UsageError(f'port {port} on {HOST} is not free ({err.strerror}): choose another with --port, '
                             'or leave --port out for the first free one from 7860') from None


@contextlib.asynccontextmanager
async def guarded(app):
    """Gradio's lifespan hook: it runs after the app's middleware is built and before the server accepts a
    connection, so the RequestGuard wraps everything, Gradio's own CORS middleware included."""
    app.middleware_stack = RequestGuard(app.middleware_stack, app.uploaded_file_dir)
    yield


def serve(session: AppSession, port: int | None = None, browser: bool = False, block: bool = True) -> 'gr.Blocks':
    """Serve the page of `session` on HOST:port (None: the first free port from 7860) behind a RequestGuard, with
    uploads limited to images; returns the Gradio Blocks once it stops, or at once, still serving, unless
    `block` (stop it with `.close()`). Gradio's temporary folder (GRADIO_TEMP_DIR) holds what it serves."""
    from gradio.themes import Default

    accept_only_images()
    theme = Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS)
    demo = build_app(session)
    # allowed_paths lets Gradio copy the outputs into its temporary folder; the guard serves only that folder.
    # quiet: Gradio's own lines include advice to set share=True, which this app never does; ours names the address.
    demo.launch(server_name=HOST, server_port=port, share=False, inbrowser=browser,
                allowed_paths=[str(session.output)], footer_links=[], theme=theme, css=CSS, ssr_mode=False,
                mcp_server=False, app_kwargs={'lifespan': guarded}, prevent_thread_lock=True, quiet=True)
    print(f'serving on {demo.local_url} (this machine only; Ctrl-C stops it)', flush=True)
    if block:
        demo.block_thread()
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    """Start the app on 127.0.0.1 and serve until interrupted; returns the exit status (`ciaosr.cli.exit_on_error`'s
    convention: 2 for a command line that cannot be used, a port that is taken or Gradio missing; 1 for a checkpoint
    or an output folder that cannot be used)."""
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec('gradio') is None:
        print('error: the app needs Gradio: pip install "ciaosr[app]"', file=sys.stderr)
        return 2
    output = Path(args.output).resolve()
    try:
        if args.port is not None:
            check_port(args.port)
        for path in args.model:  # read once now (then dropped): a file that is not a usable model refuses to start
            if not Path(path).is_file():
                raise FileNotFoundError(f'checkpoint not found: {path}')
            load_model(path)
        prepare_output(output)
        session = AppSession(output, pick_device(args.device, 0), args.model)
    except UsageError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:  # a checkpoint or the output folder that cannot be used
        print(f'error: {err}', file=sys.stderr)
        return 1
    cache = Path(tempfile.mkdtemp(prefix=CACHE_PREFIX, dir=output))
    # Set before Gradio is imported (it reads some at import time) and before it imports matplotlib.
    os.environ.update(GRADIO_TEMP_DIR=str(cache), MPLCONFIGDIR=str(cache / 'matplotlib'),
                      GRADIO_ANALYTICS_ENABLED='False', HF_HUB_OFFLINE='1', HF_HUB_DISABLE_TELEMETRY='1')
    console_script_setup()  # SIGTERM stops the server (and clears the cache) like Ctrl-C
    try:
        serve(session, args.port, browser=not args.no_browser)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
