"""A local web app for CiaoSR: drop photos, pick any scale, compare before and after, download.

    ciaosr-app [--output results] [--model CHECKPOINT ...] [--device auto] [--port 7860]
    (= python inference/app.py ...)

It serves http://127.0.0.1:PORT only (never a share link) and opens it in the browser. Photos go through
exactly what the CLI (`ciaosr.upscale`, `ciaosr-upscale`) runs: its `plan_jobs` (output names and formats),
`Upscaler` (engine and memory plan) and `process` (reading, size checks, the atomic writer), one photo at
a time and one job at a time (a queue with a concurrency limit of 1), so the files the page offers for
download are the files the CLI writes for the same settings.

Why Gradio (the extra `app`: `pip install "ciaosr[app]"`): it is the maintained, widely used library
for local ML demos; it has what this page needs as stock components (multi-file drop, a before/after
`ImageSlider` with wheel zoom, per-job progress, file downloads, a job queue with concurrency limits) and
serves its own bundled front end, so it works with no network. Offline by construction: analytics and
the version check are off, the Hugging Face hub is offline, the theme uses system fonts (no Google
fonts), no model is ever downloaded, and share=False.

Everything it writes goes under --output (default `results` in the working directory, as in the README's
commands): each run gets a folder `YYYYMMDD-HHMMSS/` with the CLI's `NAME_out.EXT` files and, for several
photos, a zip of them. Temporary files (Gradio's uploads and the copies it serves, matplotlib's cache)
live in a hidden `--output/.app-cache-XXXXXXXX/` folder that is removed when the app stops (Ctrl-C or SIGTERM).
"""
import argparse
import copy
import importlib.util
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import torch

from ciaosr_arch import CheckpointError, load_model
from ciaosr_arch.checkpoint import SHIPPED_MODELS, shipped_weights
from ciaosr_arch.runtime import openvino_version, use_runtime

from . import image_io, upscale
from .cli import UsageError, cpu_path_line, pick_device, pick_precision

CACHE_PREFIX = '.app-cache-'  # a folder of this process's temporary files (uploads, served copies), in --output
MODEL_NOTES = {'default': 'bicubic-trained, best up to x4', 'real': 'real-world photos, GAN',
               'real-l1': 'real-world photos, L1'}
TARGETS = ('scale', 'width', 'height', 'long side')
PREVIEW_SIDE = 2048  # the fitted comparison is at most this long (the 1:1 detail is always full resolution)
DETAIL_SIDE = 384  # side of the 1:1 detail view in output pixels
# CSS font lists of system fonts (plain strings: Gradio loads no font files for them).
SYSTEM_FONTS = ['system-ui', '-apple-system', "'Segoe UI'", 'Roboto', 'sans-serif']
SYSTEM_MONO_FONTS = ['ui-monospace', 'Menlo', 'Consolas', 'monospace']
REPORT_SECONDS = 0.5  # progress within a photo goes to the page at most this often
SCALE_SLIDER_MAX = 16  # the box takes any scale >= 1; the slider covers the common range
CSS = '#detail img { object-fit: none !important; image-rendering: pixelated; }'


def build_parser():
    """The app's command line."""
    parser = argparse.ArgumentParser(description='A local web app for CiaoSR upscaling (http://127.0.0.1 only).')
    parser.add_argument('-o', '--output', default='results',
                        help='folder for everything the app writes (default: ./results); one sub-folder per run')
    parser.add_argument('--model', action='append', default=[],
                        help='a checkpoint to offer besides the shipped models (repeatable; the first is selected)')
    parser.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    parser.add_argument('--port', type=int, help='port on 127.0.0.1 (default: the first free one from 7860)')
    parser.add_argument('--no-browser', action='store_true', help='do not open the page in a browser')
    return parser


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
class Outcome:
    """A finished run: one line per photo, the outputs as (name, input, output), the zip and the folder."""
    lines: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    archive: Path | None = None
    folder: Path | None = None


class Engine:
    """The CLI's engine behind the page: one device, a cached network, outputs under one folder."""

    def __init__(self, output, device, extra_models=()):
        self.output = Path(output).resolve()
        self.device = device
        self.models = {}  # spec -> label, in the order offered
        for name in SHIPPED_MODELS:
            try:
                shipped_weights(name)
            except CheckpointError:
                continue  # not shipped in this checkout (e.g. 'real' before it is trained)
            self.models[name] = f'{name} ({MODEL_NOTES.get(name, "shipped")})'
        for path in extra_models:
            self.models[str(Path(path).resolve())] = str(path)
        self.default_model = str(Path(extra_models[0]).resolve()) if extra_models else 'default'
        self._net = (None, None)  # ((spec, int8), network) of the last model used

    def precisions(self):
        """Precisions this device supports, as offered on the page (fp32 first): the autocast ones, and the CLI's
        int8 decode on a CPU where OpenVINO is installed."""
        offered = ['fp32']
        for name in ('bf16', 'fp16', 'int8'):
            try:
                pick_precision(argparse.Namespace(**{flag: flag == name for flag in ('bf16', 'fp16', 'int8')}),
                               self.device)
                if name != 'int8' or openvino_version() is not None:
                    offered.append(name)
            except UsageError:
                pass
        return offered

    def default_memory(self):
        """The CLI's default --max-memory for this device, as text."""
        if self.device.type == 'cuda':
            return f'{torch.cuda.get_device_properties(self.device).total_memory * 3 / 4 / 2 ** 30:.1f}GB'
        return upscale.CPU_MEMORY

    def network(self, spec, int8=False):
        """The network of a model spec, loaded once (only the last one used is kept), on the CLI's default runtime
        (`--runtime auto`: the faster runtime for this CPU's kind), with its int8 decode if `int8`."""
        if self._net[0] != (spec, int8):
            self._net = (None, None)
            try:
                net = load_model(spec, device=self.device)
                use_runtime(net, 'auto', int8=int8)
            except (CheckpointError, RuntimeError) as err:  # RuntimeError: int8 where OpenVINO does not run
                raise UsageError(str(err)) from None
            self._net = ((spec, int8), net)
        return self._net[1]

    def settings(self, options):
        """The CLI's arguments (its parser's defaults) for these options; UsageError if one is not valid."""
        if options.target not in TARGETS:
            raise UsageError(f'unknown output size choice {options.target!r}')
        value = float(options.value if options.value is not None else 'nan')
        if options.target == 'scale' and not (math.isfinite(value) and value >= 1):
            raise UsageError(f'the scale must be a number >= 1, got {options.value}')
        if options.target != 'scale' and not (math.isfinite(value) and value >= 1 and value == int(value)):
            raise UsageError(f'the {options.target} must be a whole number of pixels >= 1, got {options.value}')
        if options.model not in self.models:
            raise UsageError(f'unknown model {options.model!r}')
        if options.precision not in self.precisions():
            raise UsageError(f'{options.precision} is not supported on this device')
        try:
            budget = upscale.parse_bytes(options.memory)
        except ValueError as err:
            raise UsageError(str(err)) from None
        argv = ['-i', str(self.output), '-o', str(self.output), '--max-memory', str(budget)]
        args = upscale.parse_args(argv + ([] if options.precision == 'fp32' else [f'--{options.precision}']))
        args.scale = value if options.target == 'scale' else None
        return args

    def new_folder(self):
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

    def run(self, files, options, report=None):
        """Upscale `files` (paths) as the CLI does; `report(fraction, text)` says how far it is (see Meter).

        Settings problems raise UsageError before any photo is touched; a photo that fails gets the CLI's
        one-line message and the others go on.
        """
        args = self.settings(options)
        dtype = pick_precision(args, self.device)
        net = self.network(options.model, args.int8)
        upscaler = ReportingUpscaler(net, self.device, dtype, args.max_memory, args)
        outcome = Outcome(folder=self.new_folder())
        if self.device.type == 'cpu':
            outcome.lines.append(cpu_path_line('openvino' if net.runtime else 'torch', dtype, args.int8))
        jobs = plan(files, outcome.folder, args, options)
        meter = Meter([(job.src.name, out_h * out_w) for job, _, _, (out_h, out_w) in jobs], report)
        upscaler.on_progress = meter.update
        seconds = 0.0
        for index, (job, job_args, (h, w), (out_h, out_w)) in enumerate(jobs):
            meter.start_photo(index)
            start = time.perf_counter()
            try:
                upscale.process(job, upscaler, job_args, bar_position=1)
            except Exception as err:  # noqa: BLE001  (one line per failed photo; the batch goes on)
                meter.end_photo(done=False)
                outcome.lines.append(f'FAILED {job.src.name}: {failure_message(err)}')
                continue
            meter.end_photo(done=True)
            seconds += time.perf_counter() - start
            outcome.lines.append(f'{job.src.name} -> {job.dst.name}: {w}x{h} -> {out_w}x{out_h} '
                                 f'in {time.perf_counter() - start:.1f} s')
            outcome.outputs.append((job.src.name, job.src, job.dst))
        if len(outcome.outputs) > 1:
            outcome.archive = write_zip(outcome.folder / f'ciaosr_{outcome.folder.name}.zip',
                                        [dst for _, _, dst in outcome.outputs])
        failed = len(jobs) - len(outcome.outputs)
        per_image = f', {seconds / len(outcome.outputs):.1f} s per image' if outcome.outputs else ''
        outcome.lines.append(f'{len(outcome.outputs)} done, {failed} failed{per_image}; saved in {outcome.folder}')
        return outcome


class ReportingUpscaler(upscale.Upscaler):
    """The CLI's Upscaler that also passes the decoding progress (done, total) of every picture to `on_progress`."""

    on_progress = None

    def __call__(self, picture, steps, progress=None):
        """The CLI's result, unchanged; `progress` (the CLI's bar, if any) is still called."""
        def both(done, total):
            if progress:
                progress(done, total)
            if self.on_progress:
                self.on_progress(done, total)
        return super().__call__(picture, steps, both)


class Meter:
    """How far a run is, for `report(fraction, text)`: photos weighted by their output pixels, and the time left
    from the time per output pixel so far. Text: 'NAME (i of n) - about N s left'. Reports within a photo come at
    most every REPORT_SECONDS."""

    def __init__(self, photos, report):
        self.names = [name for name, _ in photos]
        self.pixels = [pixels for _, pixels in photos]
        self.report = report
        self.total = sum(self.pixels)
        self.done = 0  # output pixels of finished photos
        self.index, self.part = 0, 0.0
        self.started = time.perf_counter()
        self.last = 0.0

    def start_photo(self, index):
        """Photo `index` begins."""
        self.index, self.part = index, 0.0
        self._send()

    def update(self, done, total):
        """`done` of `total` output queries of the current photo are decoded."""
        self.part = done / total if total else 0.0
        if time.perf_counter() - self.last >= REPORT_SECONDS:
            self._send()

    def end_photo(self, done):
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


def plan(files, folder, args, options):
    """(Job, the CLI's arguments for it, input size (h, w), output size (H, W)) per file, in order; sizes are
    (0, 0) for a file whose header cannot be read (its job carries the CLI's message).

    Uploads sit in separate folders, so each is planned on its own (the CLI's `plan_jobs`); a second photo
    whose output name is taken in this run is refused. For 'long side' each photo gets --width or --height.
    """
    jobs, claimed = [], {}
    for src in map(Path, files):
        job_args, in_size, out_size = copy.copy(args), (0, 0), (0, 0)
        try:
            info = image_io.probe_image(src)
            in_size = info.height, info.width
        except image_io.ImageReadError:
            pass  # plan_jobs gives the job its message
        side = options.target
        if side == 'long side':  # the width if it is at least as long as the height
            side = 'width' if in_size[1] >= in_size[0] else 'height'
        if side != 'scale':
            setattr(job_args, side, int(options.value))
        if min(in_size):
            out_size = upscale.target_size(in_size, job_args)
        job = upscale.plan_jobs([src], src.parent, folder, job_args)[0]
        if job.dst is not None and job.dst in claimed:
            job = upscale.Job(src, problem=f'its output {job.dst.name} is also the output of another photo named '
                                       f'{claimed[job.dst].name}; rename one of them')
        elif job.dst is not None:
            claimed[job.dst] = src
        jobs.append((job, job_args, in_size, out_size))
    return jobs


def failure_message(err):
    """The CLI's one-line message for an exception (its type named when it is not an expected kind)."""
    message = str(err).splitlines()[0] if str(err) else ''
    if not isinstance(err, (image_io.ImageReadError, ValueError, MemoryError)):
        message = f'{type(err).__name__}: {message}'
    return message


def time_left(seconds, done_pixels, left_pixels):
    """' - about N s left' from the time per output pixel so far ('' until a first output pixel is done)."""
    if not done_pixels or not seconds:
        return ''
    left = seconds / done_pixels * left_pixels
    return f' - about {left:.0f} s left' if left < 120 else f' - about {left / 60:.0f} min left'


def write_zip(path, files):
    """A zip of `files` (stored, images are compressed already) at `path`, written whole or not at all."""
    temporary = path.with_name(f'.{path.name}.part')
    try:
        with zipfile.ZipFile(temporary, 'w', zipfile.ZIP_STORED) as archive:
            for file in files:
                archive.write(file, file.name)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def to_display(pixels):
    """8-bit RGB or RGBA of a Picture's pixels (16-bit rounded as the writer does, gray repeated) for the browser."""
    pixels = image_io.to_8bit(pixels)
    if pixels.shape[2] in (1, 2):
        pixels = pixels[..., [0, 0, 0, 1][:pixels.shape[2] + 2]]
    return pixels


@lru_cache(maxsize=2)
def display_pair(src, dst):
    """(before, after) 8-bit arrays of equal size: the input resized bicubically to the output, and the output."""
    after = to_display(image_io.read_image(dst).pixels)
    before = to_display(image_io.read_image(src).pixels)  # the same channels: the writer keeps gray and alpha
    before = cv2.resize(before, (after.shape[1], after.shape[0]), interpolation=cv2.INTER_CUBIC)
    return before, after


def preview(pair):
    """The pair shrunk (area average) to at most PREVIEW_SIDE on the long side, for the fitted comparison."""
    h, w = pair[1].shape[:2]
    factor = PREVIEW_SIDE / max(h, w)
    if factor >= 1:
        return pair
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return tuple(cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in pair)


def detail(pair, x_percent, y_percent):
    """A DETAIL_SIDE square (or the whole image, if smaller) of the pair at 1:1, centred at the given point."""
    h, w = pair[1].shape[:2]
    side_h, side_w = min(DETAIL_SIDE, h), min(DETAIL_SIDE, w)
    top = min(max(round(h * y_percent / 100 - side_h / 2), 0), h - side_h)
    left = min(max(round(w * x_percent / 100 - side_w / 2), 0), w - side_w)
    return tuple(image[top:top + side_h, left:left + side_w] for image in pair)


def build_app(engine):
    """The Gradio page (Blocks) for an Engine, with its queue set to one job at a time."""
    import gradio as gr

    tracker = gr.Progress()  # Gradio passes progress to a parameter whose default is a Progress

    def upscale(files, target, scale, pixels, model, precision, memory, progress=tracker):
        if not files:
            raise gr.Error('Drop one or more photos first.')
        value = scale if target == 'scale' else pixels
        try:
            outcome = engine.run(files, Options(target, value, model, precision, memory),
                                 lambda fraction, text: progress(fraction, desc=text))
        except UsageError as err:
            raise gr.Error(str(err)) from None
        names = [name for name, _, _ in outcome.outputs]
        downloads = ([str(outcome.archive)] if outcome.archive else []) + [str(dst) for _, _, dst in outcome.outputs]
        state = {name: (str(src), str(dst)) for name, src, dst in outcome.outputs}
        return ('\n'.join(outcome.lines), downloads or None,
                gr.update(choices=names, value=names[0] if names else None), state,
                *compare(names[0] if names else None, 50, 50, state))

    def compare(name, x_percent, y_percent, state):
        if not name or name not in (state or {}):
            return None, None
        pair = display_pair(*state[name])
        return preview(pair), detail(pair, x_percent, y_percent)

    def zoom(name, x_percent, y_percent, state):
        return compare(name, x_percent, y_percent, state)[1]

    def show_target(target):
        by_scale = target == 'scale'
        return (gr.update(visible=by_scale), gr.update(visible=by_scale),
                gr.update(visible=not by_scale, label=f'{target} (pixels)'))

    with gr.Blocks(title='CiaoSR upscaler', analytics_enabled=False, delete_cache=(3600, 86400)) as demo:
        gr.Markdown('# CiaoSR upscaler\nDrop photos, choose the size, press **Upscale**. Results are saved in '
                    f'`{engine.output}` and can be downloaded below at full resolution, in the format they came in.')
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(label='Photos (drop one or many)', file_count='multiple',
                                file_types=list(image_io.IMAGE_SUFFIXES), elem_id='photos')
                target = gr.Radio(list(TARGETS), value='scale', label='Output size by', elem_id='target')
                with gr.Row():
                    scale_slider = gr.Slider(1, SCALE_SLIDER_MAX, value=4, step=0.1, label='Scale',
                                             elem_id='scale-slider', scale=2)
                    scale = gr.Number(4, minimum=1, step=0.1, label='Scale (any number >= 1)', elem_id='scale',
                                      scale=1)
                pixels = gr.Number(3840, minimum=1, precision=0, label='width (pixels)', visible=False,
                                   elem_id='pixels')
                model = gr.Dropdown([(label, spec) for spec, label in engine.models.items()],
                                    value=engine.default_model, label='Model', elem_id='model')
                with gr.Row():
                    precision = gr.Radio(engine.precisions(), value='fp32', label='Precision', elem_id='precision')
                    memory = gr.Textbox(engine.default_memory(), label='Memory budget', elem_id='memory',
                                        info='as the CLI\'s --max-memory, e.g. 4GB')
                run = gr.Button('Upscale', variant='primary', elem_id='run')
            with gr.Column(scale=2):
                log = gr.Textbox(label='Log', lines=4, interactive=False, elem_id='log')
                downloads = gr.File(label='Download (full resolution)', file_count='multiple', interactive=False,
                                    elem_id='downloads')
                choice = gr.Dropdown([], label='Compare', elem_id='compare')
                slider = gr.ImageSlider(label='Before (bicubic) / after (CiaoSR): drag the line, scroll to zoom',
                                        type='numpy', format='png', interactive=False, elem_id='slider',
                                        buttons=['fullscreen'])
                with gr.Row():
                    x_percent = gr.Slider(0, 100, value=50, step=1, label='1:1 detail: x (%)')
                    y_percent = gr.Slider(0, 100, value=50, step=1, label='1:1 detail: y (%)')
                zoomed = gr.ImageSlider(label='1:1 detail (one output pixel per screen pixel)', type='numpy',
                                        format='png', interactive=False, elem_id='detail', buttons=['fullscreen'],
                                        height=DETAIL_SIDE + 40, max_height=DETAIL_SIDE + 40)
        state = gr.State({})
        scale_slider.input(lambda v: v, scale_slider, scale, queue=False)
        scale.input(lambda v: min(max(v or 1, 1), SCALE_SLIDER_MAX), scale, scale_slider, queue=False)
        target.change(show_target, target, [scale_slider, scale, pixels], queue=False)
        run.click(upscale, [files, target, scale, pixels, model, precision, memory],
                  [log, downloads, choice, state, slider, zoomed], concurrency_limit=1, concurrency_id='upscale',
                  show_progress_on=log)
        choice.change(compare, [choice, x_percent, y_percent, state], [slider, zoomed])
        for control in (x_percent, y_percent):
            control.release(zoom, [choice, x_percent, y_percent, state], zoomed)
    demo.queue(default_concurrency_limit=1)
    return demo


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    """Start the app on 127.0.0.1 and serve until interrupted; returns the exit status (2: bad setup)."""
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec('gradio') is None:
        print('error: the app needs Gradio: pip install "ciaosr[app]"', file=sys.stderr)
        return 2
    output = Path(args.output).resolve()
    try:
        for path in args.model:
            if not Path(path).is_file():
                raise UsageError(f'checkpoint not found: {path}')
        upscale.prepare_output(output)
        engine = Engine(output, pick_device(args.device, 0), args.model)
    except UsageError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    cache = Path(tempfile.mkdtemp(prefix=CACHE_PREFIX, dir=output))
    # Set before Gradio is imported (it reads some at import time) and before it imports matplotlib.
    os.environ.update(GRADIO_TEMP_DIR=str(cache), MPLCONFIGDIR=str(cache / 'matplotlib'),
                      GRADIO_ANALYTICS_ENABLED='False', HF_HUB_OFFLINE='1', HF_HUB_DISABLE_TELEMETRY='1')
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the server (and clears the cache) like Ctrl-C
    try:
        import gradio as gr

        theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS)
        build_app(engine).launch(server_name='127.0.0.1', server_port=args.port, share=False,
                                 inbrowser=not args.no_browser, allowed_paths=[str(output)], footer_links=[],
                                 theme=theme, css=CSS, ssr_mode=False, mcp_server=False)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
