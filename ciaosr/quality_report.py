"""No-reference quality report in the layout of the paper's Table 9: NIQE, BRISQUE, PIQE of real upscaled photos.

    ciaosr-quality-report --inputs DIR --scales 4 8 16 [--bicubic] [--model NAME|PATH ...]
        [--outputs NAME SCALE DIR ...] --out DIR

Every image (centre-cropped to at most --max-input-side LR pixels per side) is upscaled by each method and
rounded to 8 bits, as if saved, then scored. Methods: PIL bicubic; our models by shipped name ('default',
'real-l1', 'real') or CiaoSR/LIIF checkpoint (LR tiles of --tile pixels); any fixed-scale network spandrel
loads (Real-ESRGAN, SwinIR, HAT, ...: run at its native scale and resized with Lanczos, as Real-ESRGAN's
--outscale does); folders of another tool's outputs, matched to the inputs by file stem and scored as they are.
The LR-grid index (`ciaosr.grid_index`: detail locked to the LR pixel grid, integer scales) is reported with
the metrics, with each method's mean phase profile.
Writes into --out: table.md and table.csv (methods x (scale, metric) means, lower is better),
results.json (settings, {method, scale, metric, mean, n_images} records, per-image values), per_image.csv,
and sheets/<image>.png (per scale: the input with the crop marked, then bicubic and each method on the
central crop at 1:1 output pixels). A value that cannot be computed is null with the reason, never NaN;
unreadable, hidden and too small input files are skipped and named.
"""
import argparse
import csv
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ciaosr_arch import CheckpointError
from ciaosr_arch.engine import Net, default_overlap, output_size
from ciaosr_arch.errors import error_line
from ciaosr_arch.evaluation import as_scale, scale_label
from ciaosr_arch.image import to_pixels, to_tensor
from ciaosr_arch.resize import resize_pil
from ciaosr_arch.shipped import SHIPPED_MODELS, resolve_weights

from . import image_io
from .cli import (
    BICUBIC,
    OneLineParser,
    UsageError,
    add_device_options,
    add_model_options,
    at_least,
    exit_on_error,
    model_specs,
    pick_device,
    pick_precision,
    prepare_output,
    scale_arg,
    tile_problem,
)
from .grid_index import grid_index
from .iqa import METRICS, MetricUnavailable, create_metric
from .other_upscalers import TILE_PAD, FixedScaleUpscaler, MissingOutput, OutputsFolder, UpscalerError
from .reporting import grid_result, load_network, profile_line, table_lines, upscale_tensor

NR_METRICS = ('niqe', 'brisque', 'piqe')
GRID = 'grid'  # the LR-grid index (`ciaosr.grid_index`), a column like the metrics
GRID_VARIANT = ('LR-grid index (ciaosr.grid_index): largest deviation of the phase profile (mean |step| between '
                'neighbouring output pixels per phase of the LR grid, BT.601 luma, mean 1) from its two neighbours; '
                '0 = smooth, s = all detail on LR pixel boundaries; integer scales only')
BICUBIC_NOTE = 'PIL Image.resize(BICUBIC) (a = -0.5) of the 8-bit input to the same output size'
MIN_INPUT_SIDE = 8  # smaller inputs (icons, strips) are skipped: not photos; at x2 still one PIQE block
CELL = 192  # contact-sheet cell side: crops are shown at 1:1 output pixels (integer zoom when smaller)
GAP, LABEL_H = 4, 16
METRIC_ERRORS = (RuntimeError, ValueError, AssertionError)  # per-image failures (e.g. NIQE's SVD), not bugs


def load_rgb(path: str | Path) -> np.ndarray:
    """uint8 [h, w, 3] RGB array of an image file, upright: gray copied to RGB, alpha dropped, 16 bits rounded.

    ImageReadError (one line) if the file is not a readable image.
    """
    return image_io.as_rgb(image_io.read_image(path).pixels)


@dataclass
class Input:
    """One scored input: its file, the file's (H, W), the scored window (top, left, h, w) and its uint8 pixels."""
    path: Path
    size: tuple[int, int]
    box: tuple[int, int, int, int]
    pixels: np.ndarray

    def out_size(self, scale: float) -> tuple[int, int]:
        """(H, W) of every method's output for the scored window at `scale`: round(h * scale), round(w * scale)."""
        return output_size(self.pixels.shape[:2], scale)


def central_box(size: tuple[int, int], side: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the central window of at most side x side pixels of an (H, W) image (0: all of it)."""
    height, width = (min(side, s) if side else s for s in size)
    return (size[0] - height) // 2, (size[1] - width) // 2, height, width


def load_inputs(paths: Iterable[Path], max_side: int) -> tuple[list[Input], list[dict[str, str]]]:
    """([Input], [{'name', 'reason'}]): the images to score, and the files skipped (unreadable, too small)."""
    inputs, skipped = [], []
    for path in paths:
        try:
            full = load_rgb(path)
        except image_io.ImageReadError as err:
            skipped.append({'name': path.name, 'reason': str(err)})
            continue
        if min(full.shape[:2]) < MIN_INPUT_SIDE:
            skipped.append({'name': path.name, 'reason': f'too small ({full.shape[1]}x{full.shape[0]}; '
                                                         f'at least {MIN_INPUT_SIDE} px per side are needed)'})
            continue
        top, left, height, width = box = central_box(full.shape[:2], max_side)
        inputs.append(Input(path, full.shape[:2], box, full[top:top + height, left:left + width]))
    return inputs, skipped


def upscale_model(net: Net, img: np.ndarray, size: tuple[int, int], tile: int, tile_overlap: int,
                  device: torch.device, dtype: torch.dtype | None = None) -> np.ndarray:
    """A CiaoSR/LIIF network's uint8 [H, W, 3] output for a uint8 [h, w, 3] input, LR-tiled, autocast to `dtype`
    (None: float32)."""
    return to_pixels(upscale_tensor(net, to_tensor(img), size, device, dtype, tile=tile, tile_overlap=tile_overlap)[0])


def score(name: str, metric: Callable[[torch.Tensor], torch.Tensor], img: np.ndarray,
          device: str | torch.device = 'cpu') -> tuple[float | None, str | None]:
    """(value, None) of pyiqa no-reference metric `name` for a uint8 [H, W, 3] image, or (None, why not).

    No value for images below the metric's smallest size (`METRICS[name].min_side`), when pyiqa fails on the
    image (METRIC_ERRORS, e.g. NIQE's SVD on a flat image) or returns a non-finite number.
    """
    min_side = METRICS[name].min_side
    if min(img.shape[:2]) < min_side:
        return None, f'smaller than the {min_side} px per side {name.upper()} needs'
    try:
        value = metric(to_tensor(img).to(device)).item()
    except METRIC_ERRORS as err:
        return None, error_line(err, named=True)
    return (value, None) if math.isfinite(value) else (None, f'not a finite number ({value})')


@dataclass
class Method:
    """A row of the report: upscale(Input, scale) -> uint8 [H, W, 3] (MissingOutput: none for this image)."""
    name: str
    description: str
    upscale: Callable[[Input, float], np.ndarray]


def bicubic_method() -> Method:
    return Method(BICUBIC, BICUBIC_NOTE, lambda item, scale: resize_pil(item.pixels, item.out_size(scale)))


def model_method(name: str, spec: str, args: argparse.Namespace, device: torch.device,
                 dtype: torch.dtype | None = None) -> Method:
    """Method of a --model (`reporting.load_network`): a shipped name or CiaoSR/LIIF checkpoint, else a fixed-scale
    network file spandrel loads (`FixedScaleUpscaler`). CheckpointError / UpscalerError (one line) otherwise."""
    path = resolve_weights(spec)
    if not path.is_file():
        raise CheckpointError(f'--model {spec}: no such file, nor a shipped model ({", ".join(SHIPPED_MODELS)})')
    network = load_network(path, device, args.tile, args.tile_pad)
    if isinstance(network, FixedScaleUpscaler):
        return Method(name, network.describe(), lambda item, scale: network(item.pixels, item.out_size(scale)))
    tiling = f'LR tiles of {args.tile} px (overlap {args.tile_overlap})' if args.tile else 'whole images'
    precision = f'{dtype} autocast' if dtype else 'fp32'
    return Method(name, f'{network.arch["type"]} ({network.arch["encoder"]}) from {path}, {tiling}, {precision}',
                  lambda item, scale: upscale_model(network, item.pixels, item.out_size(scale), args.tile,
                                                    args.tile_overlap, device, dtype))


def outputs_method(name: str, folders: dict[float, str], inputs: Sequence[Input]) -> Method:
    """Method of --outputs NAME SCALE DIR (one folder per scale): the files as they are, cropped like the inputs.

    The files are checked against the inputs ([Input]) at once: UpscalerError (one line) for a folder that
    matches no input, an unreadable file or one of the wrong size.
    """
    outputs = OutputsFolder(name, folders)
    outputs.check({item.path.stem: item.size for item in inputs})
    return Method(name, outputs.describe(),
                  lambda item, scale: outputs.output(item.path.stem, item.size, item.box, item.out_size(scale),
                                                     scale, load_rgb))


def outputs_folders(args: argparse.Namespace) -> dict[str, dict[float, str]]:
    """{name: {scale: folder}} of the --outputs NAME SCALE DIR triples; UsageError (one line) for a bad one."""
    folders = {}
    for name, scale_text, folder in args.outputs or []:
        try:
            scale = as_scale(scale_text)
        except ValueError as err:
            raise UsageError(f'--outputs {name} {scale_text} {folder}: {err}') from None
        if scale not in args.scales:
            raise UsageError(f'--outputs {name} {scale_text} {folder}: {scale_label(scale)} is not one of --scales '
                             f'({", ".join(scale_label(s) for s in args.scales)})')
        if scale in folders.setdefault(name, {}):
            raise UsageError(f'--outputs {name}: two folders for {scale_label(scale)}')
        folders[name][scale] = folder
    return folders


def load_methods(args: argparse.Namespace, device: torch.device, inputs: Sequence[Input],
                 dtype: torch.dtype | None = None) -> list[Method]:
    """[Method]: bicubic first, then each --model, then each --outputs name (checked before any model loads).
    Without --model, the 'default' model is a method unless --outputs is given (scoring other tools' folders
    upscales nothing unasked).

    One-line errors: UsageError for --outputs or method names that cannot be used (names not unique), CheckpointError
    or UpscalerError for a model or folder that cannot be used, or inputs ([Input]) that share a file stem.
    """
    folders = outputs_folders(args)
    models = model_specs(args) if args.model or not folders else {}
    names = [*models, *folders]
    if len(set(names)) != len(names) or BICUBIC in names:
        raise UsageError(f'method names must be unique and not {BICUBIC!r}: {names} (use --name)')
    shared = image_io.shared_stems(item.path for item in inputs)
    if shared:  # each input's contact sheet is sheets/STEM.png, and --outputs are found by the stem
        raise UpscalerError(f'--inputs: files share a name but for the suffix, so their contact sheets (and --outputs) '
                            f'would be mixed up: {", ".join(shared)}; rename them')
    outside = [outputs_method(name, scales, inputs) for name, scales in folders.items()]
    ours = [model_method(name, spec, args, device, dtype) for name, spec in models.items()]
    return [bicubic_method(), *ours, *outside]


def metric_info(name: str, metric: object, params_dir: str | Path | None) -> dict[str, str]:
    """For the report: how a metric is computed and from which parameters, or why it is unavailable."""
    if isinstance(metric, MetricUnavailable):
        return {'unavailable': str(metric)}
    if name == GRID:
        return {'variant': GRID_VARIANT, 'parameters': 'none needed'}
    param_file = METRICS[name].param_file
    if param_file is None:
        parameters = 'none needed'
    else:
        parameters = str(Path(params_dir) / param_file) if params_dir else f"{param_file} from pyiqa's cache"
    return {'variant': METRICS[name].variant, 'parameters': parameters}


def contact_sheet(img: np.ndarray, rows: Sequence[tuple[float, dict[str, np.ndarray | None]]]) -> Image.Image:
    """Contact sheet: one row per scale: the input with the crop marked, then each method's central crop.

    img: the uint8 [h, w, 3] input; rows: [(scale, {method: uint8 [H, W, 3] output or None (left blank)})], the
    same methods per row, the first one always present.
    """
    names = list(rows[0][1])
    sheet = Image.new('RGB', ((1 + len(names)) * (CELL + GAP) + GAP, LABEL_H + len(rows) * (CELL + GAP) + GAP),
                      (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for col, label in enumerate(['input', *names]):
        draw.text((GAP + col * (CELL + GAP), 2), label[:30], fill=(255, 255, 255))
    h, w = img.shape[:2]
    thumb_zoom = CELL / max(h, w)
    thumb = Image.fromarray(img).resize((max(1, round(w * thumb_zoom)), max(1, round(h * thumb_zoom))),
                                        Image.Resampling.NEAREST if thumb_zoom >= 1 else Image.Resampling.LANCZOS)
    for row, (scale, outputs) in enumerate(rows):
        y = LABEL_H + row * (CELL + GAP)
        first = outputs[names[0]]
        assert first is not None  # the first method always has an output
        out_h, out_w = first.shape[:2]
        crop_h, crop_w = min(CELL, out_h), min(CELL, out_w)
        top, left = (out_h - crop_h) // 2, (out_w - crop_w) // 2
        marked = thumb.copy()  # crop window in thumbnail pixels: output -> LR -> thumbnail
        box = [left * w / out_w, top * h / out_h, (left + crop_w) * w / out_w, (top + crop_h) * h / out_h]
        ImageDraw.Draw(marked).rectangle([round(v * thumb_zoom) for v in box], outline=(255, 0, 0))
        sheet.paste(marked, (GAP, y))
        draw.text((GAP + 2, y + 2), scale_label(scale), fill=(255, 255, 0))
        zoom = max(1, CELL // max(crop_h, crop_w))
        for col, name in enumerate(names, start=1):
            output = outputs[name]
            if output is None:
                draw.text((GAP + col * (CELL + GAP) + 2, y + 2), 'no output', fill=(255, 255, 255))
                continue
            crop = Image.fromarray(output[top:top + crop_h, left:left + crop_w])
            sheet.paste(crop.resize((crop.width * zoom, crop.height * zoom), Image.Resampling.NEAREST),
                        (GAP + col * (CELL + GAP), y))
    return sheet


def summarise(per_image: Sequence[dict[str, Any]], methods: Iterable[str], scales: Iterable[float],
              metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """{method, scale, metric, mean, n_images} records; mean None when no image has a value.

    Unavailable metrics carry 'unavailable' (the reason); cells where some or all images have no value carry
    'failed': each distinct reason with its image count; the LR-grid index carries 'profile', the mean phase
    profile over the images with a value.
    """
    records = []
    for method in methods:
        for scale in scales:
            for name, metric in metrics.items():
                record = {'method': method, 'scale': scale, 'metric': name}
                if isinstance(metric, MetricUnavailable):
                    records.append({**record, 'mean': None, 'n_images': 0, 'unavailable': str(metric)})
                    continue
                rows = [r for r in per_image if (r['method'], r['scale'], r['metric']) == (method, scale, name)]
                values = [r['value'] for r in rows if r['value'] is not None]
                record.update(mean=sum(values) / len(values) if values else None, n_images=len(values))
                profiles = [r['profile'] for r in rows if r.get('profile')]
                if profiles:
                    record['profile'] = np.mean(profiles, axis=0).tolist()
                errors = Counter(r['error'] for r in rows if r['value'] is None)
                if errors:
                    record['failed'] = '; '.join(f'{reason} ({n} image{"s" * (n > 1)})'
                                                 for reason, n in errors.items())
                records.append(record)
    return records


def table_rows(records: Sequence[dict[str, Any]], methods: Iterable[str], scales: Sequence[float],
               metrics: Collection[str], n_images: int) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Table 9 layout: one row per method, columns (scale, metric)."""
    cells = {(r['method'], r['scale'], r['metric']): r for r in records}

    def cell(record):
        if 'unavailable' in record:
            return 'unavailable'
        if record['n_images'] == 0:
            return 'n/a'
        text = f'{record["mean"]:.4f}'
        return text if record['n_images'] == n_images else f'{text} (n={record["n_images"]})'

    header = ['Method'] + [f'{scale_label(s)} {m.upper()}' for s in scales for m in metrics]
    rows = [[method] + [cell(cells[method, s, m]) for s in scales for m in metrics] for method in methods]
    return header, rows


def markdown(header: list[str], rows: list[list[str]], settings: dict[str, Any],
             records: Sequence[dict[str, Any]]) -> str:
    """The report as Markdown: settings, the table, why values are missing, how each metric was computed."""
    lines = ['# No-reference quality report', '',
             f'Inputs: `{settings["inputs"]}`, {len(settings["images"])} images; '
             f'scales {", ".join(scale_label(s) for s in settings["scales"])}. Lower is better for every metric.', '']
    if settings['skipped']:
        lines += ['Skipped: ' + '; '.join(f'{s["name"]}: {s["reason"]}' for s in settings['skipped']) + '.', '']
    cropped = [i['name'] for i in settings['images'] if i['scored_size_hw'] != i['size_hw']]
    if settings['max_input_side']:
        lines.append(f'Inputs larger than {settings["max_input_side"]} px per side are centre-cropped to it '
                     f'before upscaling (`--max-input-side`): {len(cropped)} of {len(settings["images"])} images'
                     + (f' ({", ".join(cropped)}).' if cropped else '.'))
    scored = {r['method'] for r in records}
    lines += ['', 'Methods:', '', *[f'- `{name}`: {text}' for name, text in settings['methods'].items()
                                    if name in scored]]
    if BICUBIC not in scored:
        lines.append(f'- `{BICUBIC}`: in the contact sheets only (`--bicubic` adds it to the tables)')
    lines += [
              '', 'All outputs are rounded to 8 bits before scoring. Cells: mean over images; (n=k) when some '
              'images have no value, n/a when none has (reasons below and in per_image.csv).', '',
              *table_lines(header, rows)]
    failed = [r for r in records if 'failed' in r]
    if failed:
        lines += ['', '## Missing values', '']
        lines += [f'- {r["method"]} {scale_label(r["scale"])} {r["metric"].upper()}: {r["failed"]}' for r in failed]
    profiles = [r for r in records if 'profile' in r]
    if profiles:
        lines += ['', '## LR-grid phase profiles', '', 'Mean over images; phase 0 is the first output pixel of an '
                  'LR pixel, so a peak at the last phase is detail on LR pixel boundaries.', '']
        lines += [profile_line(f'{r["method"]} {scale_label(r["scale"])}', r['profile']) for r in profiles]
    lines += ['', '## Metrics', '']
    for name, info in settings['metrics'].items():
        if 'unavailable' in info:
            lines.append(f'- {name.upper()}: unavailable: {info["unavailable"]}')
        else:
            lines.append(f'- {name.upper()}: {info["variant"]}; parameters: {info["parameters"]}')
    return '\n'.join(lines) + '\n'


def earlier_sheets(out: Path) -> list[Path]:
    """The contact sheets that an earlier report in the folder `out` wrote: out/sheets/STEM.png for the images its
    results.json lists (none if there is no such file, or it cannot be read)."""
    try:
        images = json.loads((out / 'results.json').read_text())['images']
        return [out / 'sheets' / f'{Path(image["name"]).stem}.png' for image in images]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=(__doc__ or '').split('\n\n')[0])
    parser.add_argument('--inputs', required=True, help='folder of real LR images (or one image)')
    parser.add_argument('--scales', type=scale_arg, nargs='+', default=[8, 16], help='upscaling factors')
    add_model_options(parser, ', or any fixed-scale network file spandrel loads (.pth/.safetensors: Real-ESRGAN, '
                              'SwinIR, HAT, ...; run in fp32)')
    parser.add_argument('--outputs', nargs=3, action='append', metavar=('NAME', 'SCALE', 'DIR'),
                        help="another tool's outputs at SCALE (one of --scales) in DIR, matched to the inputs by "
                             'file stem and scored as they are; repeat with the same NAME for other scales')
    parser.add_argument('--bicubic', action='store_true', help='add the bicubic baseline to the tables')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--metrics', nargs='+', choices=(*NR_METRICS, GRID), default=[*NR_METRICS, GRID],
                        help=f'default: all ({GRID}: the LR-grid index, with phase profiles)')
    parser.add_argument('--iqa-weights', help='folder with niqe_modelparameters.mat and brisque_svm_weights.pth '
                        "(default: pyiqa's cache, downloading what is missing)")
    parser.add_argument('--max-input-side', type=at_least(0), default=128,
                        help=f'centre-crop inputs to at most N LR px per side, N >= {MIN_INPUT_SIDE} (0: whole '
                             'images); default 128')
    parser.add_argument('--tile', type=at_least(0), default=128,
                        help='LR tile side for the models (0: whole image)')
    parser.add_argument('--tile-overlap', type=at_least(0),
                        help='CiaoSR/LIIF tile overlap, at most half the tile (default: a quarter of it, at most 32)')
    parser.add_argument('--tile-pad', type=at_least(0), default=TILE_PAD,
                        help="context px around each tile of spandrel models (Real-ESRGAN's --tile_pad)")
    add_device_options(parser)  # the precision applies to CiaoSR/LIIF models
    args = parser.parse_args(argv)
    if min(args.scales) < 1:  # the report scores upscaled photos (x1: restoration, as Real-ESRGAN's --outscale 1)
        parser.error(f'--scales must be at least 1 (the inputs are upscaled), got {min(args.scales):g}')
    if 0 < args.max_input_side < MIN_INPUT_SIDE:  # the crops must be inputs the report takes
        parser.error(f'--max-input-side must be 0 (whole images) or at least {MIN_INPUT_SIDE}, got '
                     f'{args.max_input_side}')
    problem = tile_problem(args.tile, args.tile_overlap, 'whole images')
    if problem:
        parser.error(problem)
    if args.tile_overlap is None:
        args.tile_overlap = default_overlap(args.tile)
    if args.iqa_weights is not None and not Path(args.iqa_weights).is_dir():
        parser.error(f'--iqa-weights: no such folder: {args.iqa_weights}')
    return args


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the report; returns the results.json content. A command line that cannot be used ends the process with
    one line and exit status 2; inputs, a model or outputs folders that cannot be used with one line and exit status
    1 (`cli.exit_on_error`)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    with exit_on_error():
        device = pick_device(args.device)
        dtype = pick_precision(device, args.fp16, args.bf16)
        root = Path(args.inputs)
        paths = [root] if root.is_file() else image_io.list_images(root)
        if not paths:
            raise FileNotFoundError(f'--inputs: no images ({", ".join(image_io.IMAGE_SUFFIXES)}) in {root}')
        inputs, skipped = load_inputs(paths, args.max_input_side)
        for entry in skipped:
            print(f'skipped {entry["name"]}: {entry["reason"]}')
        if not inputs:
            raise FileNotFoundError(f'--inputs: no usable image in {root}')
        methods = load_methods(args, device, inputs, dtype)
        prepare_output(out)  # after every check of the inputs and models: a refused run leaves nothing
        (out / 'sheets').mkdir(exist_ok=True)
    earlier = earlier_sheets(out)  # removed once this report is written, unless this run writes them again
    metrics = {}  # name -> metric, or the MetricUnavailable saying why not
    for name in args.metrics:
        if name == GRID:
            metrics[name] = grid_index
            continue
        try:
            metrics[name] = create_metric(name, args.iqa_weights, device)
        except MetricUnavailable as err:
            metrics[name] = err
            print(f'{name}: unavailable: {err}')
    available = {name: metric for name, metric in metrics.items()
                 if name != GRID and not isinstance(metric, MetricUnavailable)}
    scored = [m.name for m in methods if args.bicubic or m.name != BICUBIC]

    per_image, image_info = [], []
    for index, item in enumerate(inputs, start=1):
        start = time.time()
        image_info.append({'name': item.path.name, 'size_hw': list(item.size),
                           'scored_size_hw': list(item.pixels.shape[:2])})
        rows = []
        for scale in args.scales:
            outputs, missing = {}, {}
            for method in methods:
                try:
                    outputs[method.name] = method.upscale(item, scale)
                except MissingOutput as err:
                    outputs[method.name], missing[method.name] = None, str(err)
            for method in scored:
                for name, metric in available.items():
                    if outputs[method] is None:
                        value, error = None, missing[method]
                    else:
                        value, error = score(name, metric, outputs[method], device)
                    per_image.append({'image': item.path.name, 'method': method, 'scale': scale, 'metric': name,
                                      'value': value, **({'error': error} if error else {})})
                if GRID in metrics:
                    value, error, profile = (None, missing[method], None) if outputs[method] is None else grid_result(
                        outputs[method], scale)
                    per_image.append({'image': item.path.name, 'method': method, 'scale': scale, 'metric': GRID,
                                      'value': value, **({'error': error} if error else {'profile': profile})})
            rows.append((scale, outputs))
        contact_sheet(item.pixels, rows).save(out / 'sheets' / f'{item.path.stem}.png', optimize=True)
        height, width = item.size
        print(f'[{index}/{len(inputs)}] {item.path.name} {width}x{height} -> '
              f'{item.pixels.shape[1]}x{item.pixels.shape[0]}: {time.time() - start:.1f} s', flush=True)

    settings = {
        'inputs': str(args.inputs), 'images': image_info, 'skipped': skipped, 'scales': args.scales,
        'max_input_side': args.max_input_side, 'tile': args.tile, 'tile_overlap': args.tile_overlap,
        'tile_pad': args.tile_pad, 'methods': {m.name: m.description for m in methods},
        'metrics': {name: metric_info(name, metric, args.iqa_weights) for name, metric in metrics.items()},
    }
    records = summarise(per_image, scored, args.scales, metrics)
    header, rows = table_rows(records, scored, args.scales, metrics, len(inputs))
    (out / 'table.md').write_text(markdown(header, rows, settings, records))
    write_csv(out / 'table.csv', header, rows)
    write_csv(out / 'per_image.csv', ['image', 'method', 'scale', 'metric', 'value', 'error', 'profile'],
              [[r['image'], r['method'], r['scale'], r['metric'], r['value'], r.get('error', ''),
                ' '.join(f'{v:.4f}' for v in r.get('profile') or ())] for r in per_image])
    results = {**settings, 'records': records, 'per_image': per_image}
    (out / 'results.json').write_text(json.dumps(results, indent=1, allow_nan=False))
    written = {out / 'sheets' / f'{item.path.stem}.png' for item in inputs}
    stale = [path for path in earlier if path not in written and path.is_file()]
    for path in stale:  # an earlier report's, of images this one has not: they would pass for this report's
        path.unlink()
    print(f'wrote {out / "table.md"}, table.csv, results.json, per_image.csv, sheets/'
          + (f' (removed {len(stale)} sheet(s) of the earlier report in {out})' if stale else ''))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: `run` with the command line; exit status 0 (errors exit earlier with one line: 2 for
    the command line, 1 for inputs, a model or outputs folders)."""
    run(argv)


if __name__ == '__main__':
    main()
