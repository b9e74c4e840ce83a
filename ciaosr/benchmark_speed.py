"""Speed and memory of whole-image CiaoSR inference on this machine, against an official-style path.

    ciaosr-benchmark-speed [--sizes 48 96] [--scales 4 8] [--threads N] [--weights PATH]

For EDSR-baseline CiaoSR it times, per (LR size, scale), in a fresh subprocess each:
  (a) reference: the official code's evaluation order: 30000-query chunks that each recompute the
      unfold and the cross-scale attention (as the official code computes it: a conv2d of the features
      with one filter per down-scaled position and a conv_transpose2d, image by image), one MLP pass
      per neighbour on concatenated inputs, fp32;
  (b) ours, fp32: `super_resolve` (features once per image, first MLP layers per LR pixel,
      neighbours batched, small chunks);
  (c) ours, bf16 autocast.
Reported: seconds (best of --repeat), peak memory (growth of peak RSS over the loaded-model baseline,
taken in a second run of each path with glibc's mmap threshold fixed at 128 KB, so that RSS follows the
live memory: under glibc's default, moving threshold the same run's peak RSS varies by up to 40%), ratios to (a),
max |b - a| and PSNR(c, b). Weights: random (cost does not depend on them) unless --weights.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ciaosr_arch import CiaoSR, load_model, make_cell, make_coord, super_resolve
from ciaosr_arch.archs.coords import shift_coord

OFFICIAL_CHUNK = 30000
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


PATHS = {
    'a_reference_fp32': official_style,
    'b_ours_fp32': lambda net, lr, s: super_resolve(net, lr, s),
    'c_ours_bf16': lambda net, lr, s: _bf16(net, lr, s),
}


def _bf16(net, lr, scale):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        return super_resolve(net, lr, scale)


def _peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(path, size, scale, repeat, weights, out_file):
    """Child process: time one path; save its output for the accuracy columns."""
    torch.manual_seed(0)
    net = load_model(weights) if weights else CiaoSR().eval()
    lr = F.interpolate(torch.rand(1, 3, size // 4, size // 4), size=(size, size), mode='bicubic').clamp(0, 1)
    baseline = _peak_rss_bytes()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = PATHS[path](net, lr, scale)
        times.append(time.perf_counter() - start)
    torch.save(out, out_file)
    print(json.dumps({'seconds': min(times), 'peak_mb': (_peak_rss_bytes() - baseline) / 2 ** 20}))


def _run_child(cmd, env=None):
    """One measurement in a fresh process (with extra environment variables `env`): its JSON line."""
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[48, 96])
    parser.add_argument('--scales', type=float, nargs='+', default=[4, 8])
    parser.add_argument('--repeat', type=int, default=2)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--weights', help='checkpoint to use instead of random weights')
    parser.add_argument('--json', type=Path, help='also write the results here')
    parser.add_argument('--_child', nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args._child:
        path, size, scale, out_file = args._child
        return measure(path, int(size), float(scale), args.repeat, args.weights, out_file)

    rows, tmp = [], Path(os.environ.get('TMPDIR', '/tmp')) / f'ciaosr_speed_{os.getpid()}'
    tmp.mkdir(exist_ok=True)
    print(f'torch {torch.__version__}, {args.threads} threads, weights: {args.weights or "random"}')
    print('| LR | scale | path | seconds | peak MB | speed-up vs (a) | memory vs (a) | accuracy |')
    print('|---|---|---|---|---|---|---|---|')
    for size in args.sizes:
        for scale in args.scales:
            result = {}
            for path in PATHS:
                out_file = tmp / f'{path}.pt'
                cmd = [sys.executable, '-m', 'ciaosr.benchmark_speed', '--threads', str(args.threads), '--_child', path,
                       str(size), str(scale), str(out_file)] + (['--weights', args.weights] if args.weights else [])
                result[path] = {'seconds': _run_child(cmd + ['--repeat', str(args.repeat)])['seconds'],
                                'peak_mb': _run_child(cmd + ['--repeat', '1'], LIVE_MEMORY_ENV)['peak_mb'],
                                'output': torch.load(out_file, weights_only=True)}
            ref, fp32, bf16 = (result[p] for p in PATHS)
            ref['accuracy'] = ''
            fp32['accuracy'] = f'max abs diff to (a) {(fp32["output"] - ref["output"]).abs().max().item():.1e}'
            mse = ((bf16['output'] - fp32['output']) ** 2).mean().item()
            bf16['accuracy'] = f'PSNR vs (b) {10 * torch.log10(torch.tensor(1 / max(mse, 1e-20))).item():.1f} dB'
            for path, r in result.items():
                row = {'lr': size, 'scale': scale, 'path': path, 'seconds': r['seconds'], 'peak_mb': r['peak_mb'],
                       'speedup': ref['seconds'] / r['seconds'], 'memory_ratio': r['peak_mb'] / ref['peak_mb'],
                       'accuracy': r['accuracy']}
                rows.append(row)
                print(f"| {size}² | ×{scale:g} | {path} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | "
                      f"{row['speedup']:.2f}× | {row['memory_ratio']:.2f} | {r['accuracy']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()
