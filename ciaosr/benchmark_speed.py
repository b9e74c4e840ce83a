"""Speed and memory of whole-image CiaoSR inference on this machine: official-style reference, PyTorch,
OpenVINO, and Real-ESRGAN x4plus (what people run instead) on the same input.

    ciaosr-benchmark-speed [--sizes 48 96] [--scales 4 8] [--threads N] [--weights PATH]
                           [--realesrgan RealESRGAN_x4plus.safetensors] [--photos DIR] [--isa avx2|avx2-vnni]
    ciaosr-benchmark-speed --pipeline [--device auto|cpu|cuda] [--models default real] [--photo PATH]
                           [--sizes 512 1024] [--scales 4 8 16] [--realesrgan RealESRGAN_x4plus.safetensors]

It first prints the CPU's kind and flags (`ciaosr_arch.runtime.cpu_kind`) and the exact path that `--runtime auto`
takes on it. --isa emulates a narrower CPU kind on this one: the benchmark runs again in a process limited to that
kind's instruction sets (`ciaosr_arch.emulation`: the libraries' limits, and CPUID masked where Linux allows it; where
it does not, it says so, as timings then flatter the emulated CPU).

For EDSR-baseline CiaoSR, per (LR size, scale), the paths are timed in one fresh process, interleaved
(a, b, c, ... then again, --repeat rounds; the best of each), so that a machine whose load changes slows all
paths alike and their ratios hold:
  (a) reference: the official code's evaluation order: 30000-query chunks that each recompute the
      unfold and the cross-scale attention (as the official code computes it: a conv2d of the features
      with one filter per down-scaled position and a conv_transpose2d, image by image), one MLP pass
      per neighbour on concatenated inputs, fp32;
  (b) ours, fp32: `super_resolve` in PyTorch (features once per image, first MLP layers per LR pixel,
      neighbours batched, small chunks);
  (c) ours, bf16 autocast, PyTorch;
  (d) ours, fp32, decode on OpenVINO (`ciaosr_arch.runtime`; skipped when it is not installed);
  (e) ours, bf16 autocast, decode on OpenVINO in bf16;
  (f) ours, int8: the key and value nets of the decode in int8 on OpenVINO, the rest as (e) on a CPU with native
      bf16, else as (d) (the CLI's `--int8`);
  (r) Real-ESRGAN x4plus (--realesrgan, loaded by spandrel), fp32, whole image, at scale 4 only.
The runtime paths are run once before the rounds (conversion and compilation are reported apart, as
"one-time s"). Reported: seconds, peak memory (growth of peak RSS over the loaded-model baseline, taken in a
second, separate run of each path with glibc's mmap threshold fixed at 128 KB, so that RSS follows the live
memory: under glibc's default, moving threshold the same run's peak RSS varies by up to 40%), ratios to (a) and
to (r), max |b - a| and |d - a|, PSNR(c, b), PSNR(e, b) and PSNR(f, b). Weights: random (cost does not depend on them)
unless --weights. With --photos, the precision of the opt-in paths on real photos: the shipped default model on
centre crops of the first --photo-count images, PSNR of (c), (e) and (f) against (b) and max |d - b|.

With --pipeline it times instead what the upscaling CLI runs, on any device (`pipeline_rows`): the CLI's `Upscaler`
with its automatic tile and default memory budget, `--runtime auto` on the CPU and fp16 autocast on CUDA (the CLI's
--fp16), for each model of --models, against Real-ESRGAN x4plus as its own CLI runs by default (one pass over the
whole image, fp16 on CUDA, fp32 on the CPU; other scales: its 8-bit x4 output resized with OpenCV's Lanczos4), on
centre crops of --photo (else the synthetic input) of each --sizes side; the first run apart (conversions, CUDA
kernel selection), then the best of --repeat, and on CUDA the peak of allocated GPU memory above what was held
before (`torch.cuda.max_memory_allocated`).
"""
import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ciaosr_arch import CiaoSR, load_model, make_cell, make_coord, super_resolve
from ciaosr_arch.archs.coords import shift_coord
from ciaosr_arch.emulation import EMULATION_ENV, cpuid_masked, emulated_kind, emulation_env
from ciaosr_arch.engine import output_size
from ciaosr_arch.errors import error_line
from ciaosr_arch.image import to_pixels, to_tensor
from ciaosr_arch.runtime import (
    CPU_KINDS,
    CPU_PLANS,
    cpu_flags,
    cpu_kind,
    int8_problem,
    openvino_version,
    use_runtime,
)

from . import image_io
from .cli import (
    OneLineParser,
    at_least,
    cpu_has_bf16,
    exit_on_error,
    pick_device,
    pick_precision,
    prepare_output_files,
    tile_problem,
    upscale_arg,
)
from .pipeline import Upscaler

OFFICIAL_CHUNK = 30000
MIN_SIDE = 8  # the smallest LR side timed (--sizes, --photo-size)
LIVE_MEMORY_ENV = {'MALLOC_MMAP_THRESHOLD_': '131072'}  # glibc: big blocks back to the OS when freed


def _nearest(image, coord):
    """Official-style nearest sample of image [B, C, h, w] at coord [B, Q, 2] -> [B, Q, C]."""
    grid = coord.flip(-1).unsqueeze(1)
    return F.grid_sample(image, grid, mode='nearest', align_corners=False)[:, :, 0].permute(0, 2, 1)


def official_cross_scale_attention(module, feat):
    """The cross-scale attention (`CrossScaleAttention`'s weights) computed the official way, per image."""
    outs = []
    for s in module.scales:
        b, _, h, w = feat.shape
        padded = F.pad(feat, (0, -w % s, 0, -h % s), mode='reflect')
        hp, wp = padded.shape[-2:]
        values = module.conv_assembly(padded)
        queries = module.conv_match_1(padded)
        keys = module.conv_match_2(F.interpolate(padded, size=(hp // s, wp // s), mode='bilinear',
                                                 align_corners=False))
        filters = F.unfold(keys, 3, padding=1).transpose(1, 2)  # [B, L, C/2 * 9]
        filters = filters / filters.norm(dim=2, keepdim=True).clamp_min(module.escape_NaN)
        filters = filters.reshape(b, -1, keys.shape[1], 3, 3)
        patches = F.unfold(values, 3 * s, stride=s, padding=s).transpose(1, 2)
        patches = patches.reshape(b, -1, values.shape[1], 3 * s, 3 * s)
        out = []
        for i in range(b):
            scores = F.softmax(F.conv2d(queries[i:i + 1], filters[i], padding=1) * module.softmax_scale, dim=1)
            out.append(F.conv_transpose2d(scores, patches[i], stride=s, padding=s))
        outs.append((getattr(module, module.down_name(s))(torch.cat(out)) / 6)[..., :h, :w])
    return torch.cat(outs, 1)


@torch.no_grad()
def official_style(net, lr, scale):
    """Path (a): the official generator's test-mode order of work, on our module's weights."""
    x = lr - net.rgb_mean
    feat = net.encoder(x)
    b, _, h, w = feat.shape
    out_h, out_w = round(h * scale), round(w * scale)
    coord = make_coord((out_h, out_w)).expand(b, -1, -1)
    cell = make_cell((out_h, out_w), coord.shape[1], b)
    feat_coord = make_coord((h, w)).permute(1, 0).view(1, 2, h, w).expand(b, -1, -1, -1)
    size = coord.new_tensor([h, w])
    preds = []
    for start in range(0, coord.shape[1], OFFICIAL_CHUNK):
        crd, cl = coord[:, start:start + OFFICIAL_CHUNK], cell[:, start:start + OFFICIAL_CHUNK]
        unfolded = F.unfold(feat, 3, padding=1).view(b, -1, h, w)  # recomputed for every chunk
        values = torch.cat([unfolded, official_cross_scale_attention(net.cs_attn, feat)], 1)  # and this
        query = _nearest(unfolded, crd)
        step = (1 - cl[:, 0]) / (size - 1)
        logits, gated_values = [], []
        for offset in net.offsets:
            shifted = shift_coord(crd, offset, step)
            key, value = _nearest(unfolded, shifted), _nearest(values, shifted)
            rel = (crd - _nearest(feat_coord, shifted)) * size
            extra = torch.cat([rel, cl * size], -1)
            key = key * net.imnet_k(torch.cat([key, extra], -1))
            gated_values.append(value * net.imnet_v(torch.cat([value, extra], -1)))
            logits.append((query * key).sum(-1))
        weights = torch.stack(logits, -1).softmax(-1)
        attended = sum(weights[..., i:i + 1] * v for i, v in enumerate(gated_values))
        preds.append(net.imnet_q(attended) + F.grid_sample(
            x, crd.flip(-1).unsqueeze(1), mode='bilinear', padding_mode='border', align_corners=False)[:, :, 0]
            .permute(0, 2, 1))
    rgb = torch.cat(preds, 1) + net.rgb_mean.view(1, 1, 3)
    return rgb.clamp(0, 1).transpose(1, 2).reshape(b, 3, out_h, out_w)


NAMES = {'a': '(a) official-style, fp32', 'b': '(b) ours, fp32', 'c': '(c) ours, bf16',
         'd': '(d) ours, fp32, OpenVINO', 'e': '(e) ours, bf16, OpenVINO', 'f': '(f) ours, int8, OpenVINO',
         'r': '(r) Real-ESRGAN x4plus, fp32'}


def _ours(runtime, bf16):
    """Path function: `super_resolve` on the model copy for `runtime` (LR tiles of side `tile` with the CLI's
    overlap, `default_overlap(tile)`, or whole for 0), under bf16 autocast if `bf16`; None: where the CPU has
    native bf16, as the CLI's --int8 (elsewhere PyTorch would emulate bf16 slowly)."""
    def run(nets, lr, scale, tile=0):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=cpu_has_bf16() if bf16 is None else bf16):
            return super_resolve(nets[runtime], lr, scale, tile=tile)
    return run


PATHS = {
    'a': lambda nets, lr, scale, tile=0: official_style(nets['torch'], lr, scale),
    'b': _ours('torch', False),
    'c': _ours('torch', True),
    'd': _ours('openvino', False),
    'e': _ours('openvino', True),
    'f': _ours('int8', None),
    'r': lambda nets, lr, scale, tile=0: nets['realesrgan'](lr).clamp(0, 1),
}


def paths_for(scale, realesrgan, wanted='abcdefr'):
    """The path keys of `wanted` that run at `scale`: OpenVINO's where it is installed, Real-ESRGAN's (x4) at
    scale 4 with its weights."""
    keys = ['a', 'b', 'c']
    if openvino_version() is not None:
        keys += ['d', 'e', 'f']
    if realesrgan and scale == 4:
        keys.append('r')
    return [key for key in keys if key in wanted]


def build_nets(weights, realesrgan, keys):
    """{'torch': CiaoSR (random weights, seed 0, or `weights`), 'openvino': a copy decoding on OpenVINO, 'int8': a
    copy with OpenVINO's int8 decode, 'realesrgan': the spandrel model}, only those that `keys` use."""
    torch.manual_seed(0)
    net = load_model(weights) if weights else CiaoSR().eval()
    nets: dict[str, Any] = {'torch': net}  # CiaoSR nets, and a spandrel model
    if {'d', 'e'} & set(keys):
        nets['openvino'] = copy.deepcopy(net)
        use_runtime(nets['openvino'], 'openvino')
    if 'f' in keys:
        nets['int8'] = copy.deepcopy(net)
        use_runtime(nets['int8'], 'openvino', int8=True)
    if 'r' in keys:
        from .other_upscalers import load_spandrel
        nets['realesrgan'] = load_spandrel(realesrgan)
    return nets


def bench_input(size):
    """The LR input of every path: smooth random content (bicubic of a quarter-size noise), [1, 3, size, size]."""
    torch.manual_seed(0)
    return F.interpolate(torch.rand(1, 3, size // 4, size // 4), size=(size, size), mode='bicubic').clamp(0, 1)


def _peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@torch.no_grad()
def time_paths(keys, size, scale, repeat, weights, realesrgan, out_dir, tile=0):
    """Child process: the paths `keys` timed in `repeat` interleaved rounds; outputs saved for the accuracy
    columns. Prints {key: {'seconds': best, 'one_time': seconds of the untimed first run, or null}} as JSON."""
    nets, lr = build_nets(weights, realesrgan, keys), bench_input(size)
    result = {key: {'seconds': float('inf'), 'one_time': None} for key in keys}
    for key in keys:
        if key in 'def':  # conversion (or reading the cached graph) and compilation happen in the first call
            start = time.perf_counter()
            PATHS[key](nets, lr, scale, tile)
            result[key]['one_time'] = time.perf_counter() - start
    for _ in range(repeat):
        for key in keys:
            start = time.perf_counter()
            out = PATHS[key](nets, lr, scale, tile)
            result[key]['seconds'] = min(result[key]['seconds'], time.perf_counter() - start)
            torch.save(out.float(), out_dir / f'{key}.pt')
    print(json.dumps(result))


@torch.no_grad()
def peak_memory(key, size, scale, weights, realesrgan, tile=0):
    """Child process: peak RSS growth (MB) of one run of path `key` over its loaded-model baseline, as JSON."""
    nets, lr = build_nets(weights, realesrgan, [key]), bench_input(size)
    baseline = _peak_rss_bytes()
    PATHS[key](nets, lr, scale, tile)
    print(json.dumps({'peak_mb': (_peak_rss_bytes() - baseline) / 2 ** 20}))


def _run_child(cmd, env=None):
    """One measurement in a fresh process (with extra environment variables `env`): its JSON line."""
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return json.loads(done.stdout.strip().splitlines()[-1])


def psnr(a, b):
    """PSNR (dB) of a against b, both in [0, 1]."""
    mse = ((a.float() - b.float()) ** 2).mean().item()
    return 10 * np.log10(1 / max(mse, 1e-20))


@torch.no_grad()
def photo_precision(folder, count, size, scales):
    """Rows {'photo', 'scale', 'c', 'd', 'e', 'f'} on the first `count` images of `folder` (centre crops of size x
    size, RGB), shipped default model: PSNR (dB) of (c), (e), (f) against (b), max |d - b|; (d)-(f) without OpenVINO:
    None."""
    keys = paths_for(4, None)[1:]
    nets = build_nets('default', None, keys)
    rows = []
    for path in image_io.list_images(folder)[:count]:
        pixels = image_io.as_rgb(image_io.read_image(path).pixels, keep_depth=True)
        top, left = max(0, (pixels.shape[0] - size) // 2), max(0, (pixels.shape[1] - size) // 2)
        lr = to_tensor(pixels[top:top + size, left:left + size])
        for scale in scales:
            out = {key: PATHS[key](nets, lr, scale) for key in keys}
            rows.append({'photo': path.name, 'scale': scale, 'c': psnr(out['c'], out['b']),
                         'd': (out['d'] - out['b']).abs().max().item() if 'd' in out else None,
                         'e': psnr(out['e'], out['b']) if 'e' in out else None,
                         'f': psnr(out['f'], out['b']) if 'f' in out else None})
    return rows


def accuracy_notes(out):
    """{key: note} for the outputs `out` ({key: [1, 3, H, W]}) that have what they are compared with: the fp32 paths
    (b), (d) as max |difference| to (a) (else (d) to (b)), the bf16 and int8 paths (c), (e), (f) as PSNR against
    (b)."""
    notes = {}
    for key, exact in (('b', 'a'), ('d', 'a'), ('d', 'b')):
        if key in out and exact in out and key not in notes:
            notes[key] = f'max abs diff to ({exact}) {(out[key] - out[exact]).abs().max().item():.1e}'
    for key in 'cef':
        if key in out and 'b' in out:
            notes[key] = f'PSNR vs (b) {psnr(out[key], out["b"]):.1f} dB'
    return notes


def measured(device, repeat, run, *args):
    """(seconds of the first call of `run(*args)`, best seconds of `repeat` more, peak MB of allocated CUDA memory above
    what was allocated before them, or None off CUDA); CUDA work is waited for inside each timing."""
    cuda = device.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = []
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        held = torch.cuda.memory_allocated(device)
    for _ in range(1 + repeat):
        sync()
        start = time.perf_counter()
        run(*args)
        sync()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) - held) / 2 ** 20 if cuda else None
    return times[0], min(times[1:]), peak


def centre_crop(pixels, size):
    """The size x size centre of uint8 RGB pixels [H, W, 3]; ValueError if the picture is smaller."""
    height, width = pixels.shape[:2]
    if min(height, width) < size:
        raise ValueError(f'--photo is {width}x{height}, smaller than the {size}x{size} crop of --sizes')
    top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(pixels[top:top + size, left:left + size])


@torch.no_grad()
def pipeline_rows(device, pictures, scales, nets, realesrgan, repeat, threads):
    """Rows {'lr', 'scale', 'path', 'tile', 'first_seconds', 'seconds', 'peak_mb', 'error'} of the --pipeline table
    (see the module's docstring), yielded as they are measured: Real-ESRGAN x4plus first (`realesrgan`, a spandrel
    model on `device`, or None: no rows), then each network of `nets` ({name: a `load_model` network on `device`})
    through the CLI's `Upscaler`, on each picture of `pictures` ({LR side: uint8 RGB [side, side, 3]}) at each scale.
    `tile`: the LR tile of the Upscaler's plan (None: whole image). A row that fails (out of memory, a non-finite fp16
    output) has its one-line `error` and no times; the others go on."""
    if realesrgan:
        if device.type == 'cuda':
            realesrgan.half()
        label = f'Real-ESRGAN x4plus, {"fp32" if realesrgan.dtype == torch.float32 else "fp16"}'
        for side, pixels in pictures.items():
            for scale in scales:
                size = output_size((side, side), scale)
                yield _pipeline_row(device, repeat, side, scale, label + (
                    '' if scale == realesrgan.scale else ', then Lanczos4'), None, realesrgan_upscale, realesrgan,
                    pixels, size)
    dtype = pick_precision(device, fp16=device.type == 'cuda')
    for name, net in nets.items():
        label = f'CiaoSR {name}, ' + ('fp16' if dtype else f'{use_runtime(net, threads=threads)} fp32') + ', CLI'
        try:
            upscaler = Upscaler(net, device, dtype)
        except ValueError as err:  # the default budget that the memory in use already fills
            yield from ({'lr': side, 'scale': scale, 'path': label, 'error': str(err)}
                        for side in pictures for scale in scales)
            continue
        for side, pixels in pictures.items():
            info = image_io.ImageInfo(side, side, 3, 1, 0)
            for scale in scales:
                try:
                    steps = upscaler.plan(info, output_size((side, side), scale))
                except (ValueError, MemoryError) as err:
                    yield {'lr': side, 'scale': scale, 'path': label, 'error': str(err)}
                    continue
                yield _pipeline_row(device, repeat, side, scale, label, None if steps[-1].whole else steps[-1].tile,
                                    upscaler.upscale, image_io.Picture(pixels), steps)


def _pipeline_row(device, repeat, side, scale, path, tile, run, *args):
    """One --pipeline row: `measured(device, repeat, run, *args)`, or its error (ValueError, out of memory)."""
    row = {'lr': side, 'scale': scale, 'path': path, 'tile': tile}
    try:
        row['first_seconds'], row['seconds'], row['peak_mb'] = measured(device, repeat, run, *args)
    except (ValueError, MemoryError, torch.OutOfMemoryError) as err:
        row['error'] = error_line(err)
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return row


def realesrgan_upscale(model, pixels, size):
    """uint8 RGB [H, W, 3] of size (H, W) from pixels [h, w, 3] by a spandrel model (on its device and dtype) in one
    pass, its 8-bit output resized with Lanczos4 where the size is not its own: Real-ESRGAN's CLI with --tile 0."""
    from .other_upscalers import lanczos_resize
    sr = model(to_tensor(pixels, model.device).to(model.dtype))
    return lanczos_resize(to_pixels(sr[0].float()), size)


def print_pipeline(rows, json_path=None):
    """The --pipeline rows (an iterable, printed as they come) as a Markdown table, each with its time and memory
    against the Real-ESRGAN row of the same input and scale so far (where there is one), added to the row as
    'time_vs_realesrgan' and 'memory_vs_realesrgan'; all rows so far rewritten to `json_path` after each. Returns
    the rows."""
    print('| LR | scale | path | LR tile | first run s | seconds | peak MB | time / Real-ESRGAN '
          '| memory / Real-ESRGAN |')
    print('|---|---|---|---:|---:|---:|---:|---:|---:|')
    done = []
    for row in rows:
        other = next((r for r in [*done, row] if r['path'].startswith('Real-ESRGAN') and 'error' not in r and (
            r['lr'], r['scale']) == (row['lr'], row['scale'])), None)
        if 'error' in row:
            print(f"| {row['lr']}² | ×{row['scale']:g} | {row['path']} | failed: {row['error']} | | | | | |",
                  flush=True)
        else:
            row['time_vs_realesrgan'] = row['seconds'] / other['seconds'] if other else None
            row['memory_vs_realesrgan'] = (row['peak_mb'] / other['peak_mb'] if other and row['peak_mb'] is not None
                                           and other['peak_mb'] else None)
            print(f"| {row['lr']}² | ×{row['scale']:g} | {row['path']} | {_fmt(row['tile'], 'd')} | "
                  f"{row['first_seconds']:.2f} | {row['seconds']:.2f} | {_fmt(row['peak_mb'], '.0f')} | "
                  f"{_fmt(row['time_vs_realesrgan'], '.2f', '×')} | "
                  f"{_fmt(row['memory_vs_realesrgan'], '.2f', '×')} |", flush=True)
        done.append(row)
        if json_path:
            json_path.write_text(json.dumps(done, indent=1))
    return done


def pipeline_main(parser, args):
    """--pipeline (see the module's docstring): its table on stdout and the rows in --json."""
    if args.isa and emulated_kind() != args.isa:
        parser.error('--isa is an option of the CPU paths, not of --pipeline (run it under '
                     '`python -m ciaosr_arch.emulation KIND ciaosr-benchmark-speed --pipeline ...` instead)')
    for option in ('weights', 'photos', 'tile', 'paths', 'no_memory'):
        if getattr(args, option) != parser.get_default(option):
            parser.error(f'--{option.replace("_", "-")} is an option of the CPU paths, not of --pipeline')
    torch.set_num_threads(args.threads)
    with exit_on_error():
        prepare_output_files(args.json)
        device = pick_device(args.device or 'auto')
        if args.photo:
            pixels = image_io.as_rgb(image_io.read_image(args.photo).pixels)
        sizes = args.sizes or [512, 1024]
        pictures = {side: centre_crop(pixels, side) if args.photo else to_pixels(bench_input(side)[0])
                    for side in sizes}
        realesrgan = None
        if args.realesrgan:  # the models, read before any measurement
            from .other_upscalers import load_spandrel
            realesrgan = load_spandrel(args.realesrgan, device)
        nets = {name: load_model(name, device=device) for name in args.models}
    where = (f'{torch.cuda.get_device_name(device)}, torch {torch.__version__}' if device.type == 'cuda' else
             f'CPU: {CPU_KINDS[cpu_kind()]}, {args.threads} threads, torch {torch.__version__}, '
             f'OpenVINO {openvino_version() or "not installed"}')
    print(f'{where}; input: {f"centre crops of {args.photo}" if args.photo else "synthetic"}', flush=True)
    print_pipeline(pipeline_rows(device, pictures, args.scales or [4, 8, 16], nets, realesrgan, args.repeat,
                                 args.threads), args.json)


def main(argv=None):
    """The console script: the measurements as a Markdown table on stdout (and --json); returns the exit status of
    an --isa run (else None: 0). A command line that cannot be used exits with status 2 (argparse), --weights,
    --realesrgan, --photos or a --json path that cannot be used with one line and status 1 (`cli.exit_on_error`).
    The same function runs each measurement in a child process (the hidden --_child option)."""
    parser = OneLineParser(description=__doc__.splitlines()[0] if __doc__ else None)  # (python -OO)
    parser.add_argument('--sizes', type=at_least(MIN_SIDE), nargs='+',
                        help=f'LR sides, at least {MIN_SIDE} (default 48 96; --pipeline: 512 1024)')
    parser.add_argument('--scales', type=upscale_arg, nargs='+', help='scales > 1 (default 4 8; --pipeline: 4 8 16)')
    parser.add_argument('--repeat', type=at_least(1), default=2,
                        help='timing rounds, interleaved across the paths (default 2); --pipeline: timed runs of each '
                             'row after its first')
    parser.add_argument('--threads', type=at_least(1), default=torch.get_num_threads(),
                        help='threads of PyTorch and OpenVINO (default: PyTorch\'s, one per physical core)')
    parser.add_argument('--weights', help='checkpoint to use instead of random weights')
    parser.add_argument('--paths', default='abcdefr',
                        help='the paths to time, by letter (default abcdefr; (a) recomputes the cross-scale attention '
                             'per 30000-query chunk: leave it out above ~128 LR px). Speed ratios need (a), (b) or (r)')
    parser.add_argument('--tile', type=at_least(0), default=0,
                        help='LR tiles of this side for (b)-(f), overlapping by a quarter of the side, at most 32, as '
                             'the CLI does (default 0: whole images)')
    parser.add_argument('--realesrgan',
                        help='Real-ESRGAN x4plus weights (.pth or .safetensors) for row (r) and --pipeline')
    parser.add_argument('--photos', type=Path, help='folder of photos for the precision check of (c)-(f)')
    parser.add_argument('--photo-count', type=at_least(1), default=6, help='photos taken from --photos (default 6)')
    parser.add_argument('--photo-size', type=at_least(MIN_SIDE), default=96,
                        help='side of their centre crops (default 96)')
    parser.add_argument('--photo-scales', type=upscale_arg, nargs='+', default=[4],
                        help='scales > 1 of the photo check (default 4)')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory runs')
    parser.add_argument('--json', type=Path, help='also write the results here')
    parser.add_argument('--isa', choices=sorted(EMULATION_ENV),
                        help='emulate this narrower CPU kind (runs again limited to its instruction sets: '
                             '`ciaosr_arch.emulation`)')
    parser.add_argument('--pipeline', action='store_true',
                        help="time the upscaling CLI's pipeline against Real-ESRGAN x4plus instead, on --device")
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'],
                        help='with --pipeline: where to run (default auto: CUDA when there is a GPU)')
    parser.add_argument('--models', nargs='+', default=['default', 'real'],
                        help='with --pipeline: shipped model names or checkpoint files (default: default real)')
    parser.add_argument('--photo', type=Path, help='with --pipeline: the photo whose centre crops are the inputs')
    parser.add_argument('--_child', nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if problem := tile_problem(args.tile, None, 'whole images'):
        parser.error(problem)
    if args.pipeline:
        return pipeline_main(parser, args)
    for option in ('device', 'photo', 'models'):
        if getattr(args, option) != parser.get_default(option):
            parser.error(f'--{option} is an option of --pipeline')
    args.sizes, args.scales = args.sizes or [48, 96], args.scales or [4, 8]
    if not args._child:
        if set(args.paths) - set(PATHS):
            parser.error(f'--paths takes letters of {"".join(PATHS)}, got {args.paths!r}')
        for scale in args.scales:
            if not paths_for(scale, args.realesrgan, args.paths):
                parser.error(f'none of --paths {args.paths} runs at scale {scale:g} here ((d)-(f): OpenVINO '
                             f'installed; (r): scale 4 and --realesrgan)')
    torch.set_num_threads(args.threads)
    if args._child:
        keys, size, scale, target = args._child
        if keys.startswith('memory:'):
            return peak_memory(keys[len('memory:'):], int(size), float(scale), args.weights, args.realesrgan,
                               args.tile)
        return time_paths(keys.split(','), int(size), float(scale), args.repeat, args.weights, args.realesrgan,
                          Path(target), args.tile)

    if args.isa and emulated_kind() != args.isa:
        argv = sys.argv[1:] if argv is None else argv
        env, problem = emulation_env(args.isa)
        if problem:
            print(f'--isa {args.isa}: {problem}', file=sys.stderr)
        return subprocess.run([sys.executable, '-m', 'ciaosr.benchmark_speed', *argv], env=env).returncode
    with exit_on_error():  # the files the command names, read before any measurement: one line and exit status 1
        prepare_output_files(args.json)
        if args.weights:
            load_model(args.weights)
        if args.realesrgan:
            from .other_upscalers import load_spandrel
            load_spandrel(args.realesrgan)
        if args.photos and not image_io.list_images(args.photos):
            raise FileNotFoundError(f'--photos: no images in {args.photos}')
    kind = cpu_kind()
    emulated = f' (emulated, CPUID {"masked" if cpuid_masked() else "not masked"})' if emulated_kind() else ''
    print(f'CPU: {CPU_KINDS[kind]}{emulated}; flags: {" ".join(sorted(cpu_flags()))}; '
          f'exact path of --runtime auto: {"(d)" if CPU_PLANS[kind]["exact"] == "openvino" else "(b)"}; int8 (f): '
          f'{int8_problem(kind) or "offered"}')
    rows = []
    tiles = f'LR tiles of {args.tile}' if args.tile else 'whole images'
    print(f'torch {torch.__version__}, OpenVINO {openvino_version() or "not installed"}, {args.threads} threads, '
          f'weights: {args.weights or "random"}, (b)-(f): {tiles}')
    print('| LR | scale | path | seconds | one-time s | peak MB | speed vs (a) | time / (r) | memory vs (a) '
          '| accuracy |')
    print('|---|---|---|---:|---:|---:|---:|---:|---:|---|')
    for size in args.sizes:
        for scale in args.scales:
            keys = paths_for(scale, args.realesrgan, args.paths)
            cmd = [sys.executable, '-m', 'ciaosr.benchmark_speed', '--threads', str(args.threads),
                   '--tile', str(args.tile)] + (
                ['--weights', args.weights] if args.weights else []) + (
                ['--realesrgan', args.realesrgan] if args.realesrgan else [])
            with tempfile.TemporaryDirectory(prefix='ciaosr_speed_') as tmp:  # the paths' outputs, removed after
                result = _run_child(cmd + ['--repeat', str(args.repeat), '--_child', ','.join(keys), str(size),
                                           str(scale), tmp])
                out = {key: torch.load(Path(tmp) / f'{key}.pt', weights_only=True) for key in keys}
            for key in keys:
                result[key]['peak_mb'] = None if args.no_memory else _run_child(
                    cmd + ['--_child', f'memory:{key}', str(size), str(scale), '-'], LIVE_MEMORY_ENV)['peak_mb']
            accuracy = accuracy_notes(out)
            ref, other = result.get('a'), result.get('r')
            for key in keys:
                r = result[key]
                row = {'lr': size, 'scale': scale, 'path': NAMES[key], 'seconds': r['seconds'],
                       'one_time_seconds': r['one_time'], 'peak_mb': r['peak_mb'],
                       'speedup': ref['seconds'] / r['seconds'] if ref else None,
                       'time_vs_realesrgan': r['seconds'] / other['seconds'] if other else None,
                       'memory_ratio': r['peak_mb'] / ref['peak_mb'] if ref and r['peak_mb'] is not None else None,
                       'accuracy': accuracy.get(key, '-')}
                rows.append(row)
                print(f"| {size}² | ×{scale:g} | {row['path']} | {r['seconds']:.2f} | {_fmt(r['one_time'], '.1f')} | "
                      f"{_fmt(r['peak_mb'], '.0f')} | {_fmt(row['speedup'], '.2f', '×')} | "
                      f"{_fmt(row['time_vs_realesrgan'], '.2f', '×')} | {_fmt(row['memory_ratio'], '.2f')} | "
                      f"{row['accuracy']} |", flush=True)
    if args.photos:
        print(f'\nPrecision on photos: shipped default model, {args.photo_size}² centre crops of {args.photos}')
        print('| photo | scale | PSNR (c) vs (b) | max abs (d) - (b) | PSNR (e) vs (b) | PSNR (f) vs (b) |')
        print('|---|---|---:|---:|---:|---:|')
        photo_rows = photo_precision(args.photos, args.photo_count, args.photo_size, args.photo_scales)
        for r in photo_rows:
            print(f"| {r['photo']} | ×{r['scale']:g} | {r['c']:.1f} dB | {_fmt(r['d'], '.1e')} | "
                  f"{_fmt(r['e'], '.1f')} dB | {_fmt(r['f'], '.1f')} dB |", flush=True)
        print(f"| lowest | | {min(r['c'] for r in photo_rows):.1f} dB | "
              f"{_fmt(max((r['d'] for r in photo_rows if r['d'] is not None), default=None), '.1e')} | "
              f"{_fmt(min((r['e'] for r in photo_rows if r['e'] is not None), default=None), '.1f')} dB | "
              f"{_fmt(min((r['f'] for r in photo_rows if r['f'] is not None), default=None), '.1f')} dB |")
        rows.append({'photos': photo_rows})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def _fmt(value, spec, unit=''):
    """value formatted with `spec` and followed by `unit`, or '-' for None."""
    return '-' if value is None else format(value, spec) + unit


if __name__ == '__main__':
    main()
