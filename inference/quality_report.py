"""No-reference quality report in the layout of the paper's Table 9: NIQE, BRISQUE, PIQE of real upscaled photos.

    python inference/quality_report.py --inputs DIR --scales 8 16 [--model PATH ...] [--bicubic] --out DIR

Every image (centre-cropped to at most --max-input-side LR pixels per side) is upscaled by each model
(LR tiles of --tile pixels) and by PIL bicubic; outputs are rounded to 8 bits, as if saved, then scored.
Writes into --out: table.md and table.csv (methods x (scale, metric) means, lower is better),
results.json (settings, {method, scale, metric, mean, n_images} records, per-image values), per_image.csv,
and sheets/<image>.png (per scale: the input with the crop marked, then bicubic and each model on the
central crop at 1:1 output pixels). Metrics whose parameters are missing are reported as unavailable.
"""
import argparse
import csv
import json
import math
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the plugin is used from the checkout

from ciaosr_arch import CheckpointError, load_model, super_resolve  # noqa: E402
from ciaosr_arch.checkpoint import DEFAULT_WEIGHTS  # noqa: E402
from ciaosr_arch.data.resize import resize_pil  # noqa: E402
from ciaosr_arch.evaluation import parse_scale, scale_label, to_uint8  # noqa: E402
from ciaosr_arch.inference import output_size  # noqa: E402
from inference import image_io  # noqa: E402
from inference.iqa import METRICS, create_metric  # noqa: E402

NR_METRICS = ('niqe', 'brisque', 'piqe')
BICUBIC = 'bicubic'
BICUBIC_NOTE = 'PIL Image.resize(BICUBIC) (a = -0.5) of the 8-bit input to the same output size'
CELL = 192  # contact-sheet cell side: crops are shown at 1:1 output pixels (integer zoom when smaller)
GAP, LABEL_H = 4, 16
METRIC_ERRORS = (RuntimeError, ValueError, AssertionError)  # per-image failures (e.g. NIQE's SVD), not bugs


def list_images(inputs):
    """Image files of a folder, sorted by name, or the one file given."""
    path = Path(inputs)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f'--inputs: no such file or folder: {path}')
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in image_io.IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f'--inputs: no images ({", ".join(image_io.IMAGE_SUFFIXES)}) in {path}')
    return files


def central_crop(img, side):
    """Central at most side x side window of an [H, W, ...] array."""
    top, left = max(0, (img.shape[0] - side) // 2), max(0, (img.shape[1] - side) // 2)
    return img[top:top + side, left:left + side]


def load_rgb(path):
    """uint8 [h, w, 3] RGB array of an image file, upright: gray copied to RGB, alpha dropped, 16 bits rounded."""
    pixels = image_io.read_image(path).pixels
    if pixels.dtype == np.uint16:
        pixels = np.round(pixels / 257).astype(np.uint8)
    return pixels[..., :3] if pixels.shape[2] >= 3 else np.repeat(pixels[..., :1], 3, axis=2)


def load_inputs(paths, max_side):
    """[(path, [H, W] of the file, uint8 [h, w, 3] input centre-cropped to max_side (0: whole))]."""
    inputs = []
    for path in paths:
        try:
            full = load_rgb(path)
        except image_io.ImageReadError as err:
            raise image_io.ImageReadError(f'{path}: {err}') from None
        inputs.append((path, list(full.shape[:2]), central_crop(full, max_side) if max_side else full))
    return inputs


def to_tensor(img):
    """uint8 [h, w, 3] array -> float [1, 3, h, w] in [0, 1]."""
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255  # a writable copy


def upscale_model(net, img, size, tile, tile_overlap, device):
    """A CiaoSR/LIIF network's uint8 [H, W, 3] output for a uint8 [h, w, 3] input, LR-tiled."""
    return to_uint8(super_resolve(net, to_tensor(img).to(device), size=size, tile=tile, tile_overlap=tile_overlap))


def score(metric, img, device='cpu'):
    """(value, None) of a pyiqa no-reference metric for a uint8 [H, W, 3] image, or (None, why it failed)."""
    try:
        value = metric(to_tensor(img).to(device)).item()
    except METRIC_ERRORS as err:
        return None, f'{type(err).__name__}: {err}'
    return (value, None) if math.isfinite(value) else (None, f'not a finite number ({value})')


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'expected an integer >= 0, got {text}')
    return value


def model_paths(args):
    """{method name: checkpoint path (None: the shipped weights, also --model default)} from --model and --name
    (default: file stems)."""
    paths = [None if p == 'default' else p for p in args.model or ['default']]
    names = args.name or [Path(p or DEFAULT_WEIGHTS).stem for p in paths]
    if len(names) != len(paths):
        raise ValueError(f'--name was given {len(names)} times for {len(paths)} models')
    if len(set(names)) != len(names) or BICUBIC in names:
        raise ValueError(f'method names must be unique and not {BICUBIC!r}: {names} (use --name)')
    return dict(zip(names, paths))


def load_methods(models, args, device):
    """{name: upscale(img, size)}: bicubic first, then each model of {name: checkpoint path}."""
    methods = {BICUBIC: resize_pil}
    for name, path in models.items():
        net = load_model(path, device=device)
        methods[name] = partial(upscale_model, net, tile=args.tile, tile_overlap=args.tile_overlap, device=device)
    return methods


def metric_info(name, metric, params_dir):
    """For the report: how a metric is computed and from which parameters, or why it is unavailable."""
    if isinstance(metric, str):
        return {'unavailable': metric}
    param_file = METRICS[name].param_file
    if param_file is None:
        parameters = 'none needed'
    else:
        parameters = str(Path(params_dir) / param_file) if params_dir else f"{param_file} from pyiqa's cache"
    return {'variant': METRICS[name].variant, 'parameters': parameters}


def contact_sheet(img, rows):
    """Contact sheet: one row per scale: the input with the crop marked, then each method's central crop.

    img: the uint8 [h, w, 3] input; rows: [(scale, {method: uint8 [H, W, 3] output})], same methods per row.
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
                                        Image.NEAREST if thumb_zoom >= 1 else Image.LANCZOS)
    for row, (scale, outputs) in enumerate(rows):
        y = LABEL_H + row * (CELL + GAP)
        out_h, out_w = next(iter(outputs.values())).shape[:2]
        crop_h, crop_w = min(CELL, out_h), min(CELL, out_w)
        top, left = (out_h - crop_h) // 2, (out_w - crop_w) // 2
        marked = thumb.copy()  # crop window in thumbnail pixels: output -> LR -> thumbnail
        box = [left * w / out_w, top * h / out_h, (left + crop_w) * w / out_w, (top + crop_h) * h / out_h]
        ImageDraw.Draw(marked).rectangle([round(v * thumb_zoom) for v in box], outline=(255, 0, 0))
        sheet.paste(marked, (GAP, y))
        draw.text((GAP + 2, y + 2), scale_label(scale), fill=(255, 255, 0))
        zoom = max(1, CELL // max(crop_h, crop_w))
        for col, name in enumerate(names, start=1):
            crop = Image.fromarray(outputs[name][top:top + crop_h, left:left + crop_w])
            sheet.paste(crop.resize((crop_w * zoom, crop_h * zoom), Image.NEAREST), (GAP + col * (CELL + GAP), y))
    return sheet


def summarize(per_image, methods, scales, metrics):
    """{method, scale, metric, mean, n_images} records; unavailable metrics get mean None and the reason."""
    records = []
    for method in methods:
        for scale in scales:
            for name, metric in metrics.items():
                record = {'method': method, 'scale': scale, 'metric': name}
                if isinstance(metric, str):
                    records.append({**record, 'mean': None, 'n_images': 0, 'unavailable': metric})
                    continue
                values = [r['value'] for r in per_image
                          if (r['method'], r['scale'], r['metric']) == (method, scale, name) and r['value'] is not None]
                records.append({**record, 'mean': sum(values) / len(values) if values else None,
                                'n_images': len(values)})
    return records


def table_rows(records, methods, scales, metrics, n_images):
    """Header and rows of the Table 9 layout: one row per method, columns (scale, metric)."""
    cells = {(r['method'], r['scale'], r['metric']): r for r in records}

    def cell(record):
        if 'unavailable' in record:
            return 'unavailable'
        if record['n_images'] == 0:
            return 'failed'
        text = f'{record["mean"]:.4f}'
        return text if record['n_images'] == n_images else f'{text} (n={record["n_images"]})'

    header = ['Method'] + [f'{scale_label(s)} {m.upper()}' for s in scales for m in metrics]
    rows = [[method] + [cell(cells[method, s, m]) for s in scales for m in metrics] for method in methods]
    return header, rows


def markdown(header, rows, settings):
    """The report as Markdown: settings, the table, and how each metric was computed (or why not)."""
    lines = ['# No-reference quality report', '',
             f'Inputs: `{settings["inputs"]}`, {len(settings["images"])} images; '
             f'scales {", ".join(scale_label(s) for s in settings["scales"])}. Lower is better for every metric.', '']
    cropped = [i['name'] for i in settings['images'] if i['scored_size_hw'] != i['size_hw']]
    if settings['max_input_side']:
        lines.append(f'Inputs larger than {settings["max_input_side"]} px per side are centre-cropped to it '
                     f'before upscaling (`--max-input-side`): {len(cropped)} of {len(settings["images"])} images'
                     + (f' ({", ".join(cropped)}).' if cropped else '.'))
    lines += [f'Models: {", ".join(f"`{n}` ({p})" for n, p in settings["models"].items())}, run in LR tiles of '
              f'{settings["tile"] or "(none: whole image)"} px (overlap {settings["tile_overlap"]}).',
              f'Bicubic: {BICUBIC_NOTE}. All outputs are rounded to 8 bits before scoring. '
              'Cells: mean over images; (n=k) when a metric failed on some images (see per_image.csv).', '',
              '| ' + ' | '.join(header) + ' |', '|' + '---|' + '---:|' * (len(header) - 1)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    lines += ['', '## Metrics', '']
    for name, info in settings['metrics'].items():
        if 'unavailable' in info:
            lines.append(f'- {name.upper()}: unavailable: {info["unavailable"]}')
        else:
            lines.append(f'- {name.upper()}: {info["variant"]}; parameters: {info["parameters"]}')
    return '\n'.join(lines) + '\n'


def write_csv(path, header, rows):
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--inputs', required=True, help='folder of real LR images (or one image)')
    parser.add_argument('--scales', type=parse_scale, nargs='+', default=[8, 16], help='upscaling factors')
    parser.add_argument('--model', action='append',
                        help="CiaoSR/LIIF checkpoint or 'default' (the shipped weights); repeatable; "
                             "default: 'default'")
    parser.add_argument('--name', action='append', help='method name per --model (default: the file stem)')
    parser.add_argument('--bicubic', action='store_true', help='add the bicubic baseline to the tables')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--metrics', nargs='+', choices=NR_METRICS, default=list(NR_METRICS))
    parser.add_argument('--iqa-weights', help='folder with niqe_modelparameters.mat and brisque_svm_weights.pth '
                        "(default: pyiqa's cache, downloading what is missing)")
    parser.add_argument('--max-input-side', type=non_negative_int, default=128,
                        help='centre-crop inputs to at most N LR px per side (0: whole images); default 128')
    parser.add_argument('--tile', type=non_negative_int, default=128,
                        help='LR tile side for the models (0: whole image)')
    parser.add_argument('--tile-overlap', type=non_negative_int, default=32)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return parser.parse_args(argv)


def main(argv=None):
    """Run the report; returns the results.json content."""
    args = parse_args(argv)
    device = torch.device(args.device)
    try:
        inputs = load_inputs(list_images(args.inputs), args.max_input_side)
        models = model_paths(args)
        methods = load_methods(models, args, device)
    except (CheckpointError, FileNotFoundError, ValueError) as err:  # ValueError includes ImageReadError
        sys.exit(f'error: {err}')
    metrics = {name: create_metric(name, args.iqa_weights, device) for name in args.metrics}
    for name, metric in metrics.items():
        if isinstance(metric, str):
            print(f'{name}: unavailable: {metric}')
    available = {name: metric for name, metric in metrics.items() if not isinstance(metric, str)}
    scored = [name for name in methods if args.bicubic or name != BICUBIC]
    out = Path(args.out)
    (out / 'sheets').mkdir(parents=True, exist_ok=True)

    per_image, image_info = [], []
    for index, (path, size, img) in enumerate(inputs, start=1):
        start = time.time()
        image_info.append({'name': path.name, 'size_hw': size, 'scored_size_hw': list(img.shape[:2])})
        rows = []
        for scale in args.scales:
            out_size = output_size(img.shape[:2], scale)
            outputs = {name: upscale(img, out_size) for name, upscale in methods.items()}
            for method in scored:
                for name, metric in available.items():
                    value, error = score(metric, outputs[method], device)
                    per_image.append({'image': path.name, 'method': method, 'scale': scale, 'metric': name,
                                      'value': value, **({'error': error} if error else {})})
            rows.append((scale, outputs))
        contact_sheet(img, rows).save(out / 'sheets' / f'{path.stem}.png', optimize=True)
        print(f'[{index}/{len(inputs)}] {path.name} {size[1]}x{size[0]} -> {img.shape[1]}x{img.shape[0]}: '
              f'{time.time() - start:.1f} s', flush=True)

    settings = {
        'inputs': str(args.inputs), 'images': image_info, 'scales': args.scales,
        'max_input_side': args.max_input_side, 'tile': args.tile, 'tile_overlap': args.tile_overlap,
        'bicubic': BICUBIC_NOTE,
        'models': {name: str(path or DEFAULT_WEIGHTS) for name, path in models.items()},
        'metrics': {name: metric_info(name, metric, args.iqa_weights) for name, metric in metrics.items()},
    }
    records = summarize(per_image, scored, args.scales, metrics)
    header, rows = table_rows(records, scored, args.scales, metrics, len(inputs))
    (out / 'table.md').write_text(markdown(header, rows, settings))
    write_csv(out / 'table.csv', header, rows)
    write_csv(out / 'per_image.csv', ['image', 'method', 'scale', 'metric', 'value', 'error'],
              [[r['image'], r['method'], r['scale'], r['metric'], r['value'], r.get('error', '')] for r in per_image])
    results = {**settings, 'records': records, 'per_image': per_image}
    (out / 'results.json').write_text(json.dumps(results, indent=1))
    print(f'wrote {out / "table.md"}, table.csv, results.json, per_image.csv, sheets/')
    return results


if __name__ == '__main__':
    main()
