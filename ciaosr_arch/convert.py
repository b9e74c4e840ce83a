"""Convert a checkpoint (official mmediting .pth, BasicSR .pth) to this project's .safetensors.

    python -m ciaosr_arch.convert official.pth out.safetensors [--meta key=value ...]

The generator weights are loaded strictly (EMA weights when the file has them), the arch options
are stored in the file's metadata, and an existing output is never overwritten.
"""
import argparse
import sys
from pathlib import Path

from . import CheckpointError, load_model
from .checkpoint import save_safetensors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', type=Path)
    parser.add_argument('output', type=Path)
    parser.add_argument('--meta', nargs='*', default=[], metavar='KEY=VALUE', help='extra metadata to record')
    args = parser.parse_args(argv)
    if args.output.suffix != '.safetensors':
        parser.error('the output must end in .safetensors')
    if args.output.exists():
        parser.error(f'{args.output} exists; remove it first (nothing is ever overwritten)')
    try:
        meta = dict(item.split('=', 1) for item in args.meta)
    except ValueError:
        parser.error('--meta takes KEY=VALUE pairs')
    try:
        net = load_model(args.checkpoint)
    except CheckpointError as err:
        sys.exit(f'error: {err}')
    save_safetensors(net, args.output, net.arch, {'source': args.checkpoint.name, **meta})
    n_params = sum(p.numel() for p in net.parameters())
    print(f'{args.output}: {net.arch["type"]} ({net.arch["encoder"]}), {n_params:,} parameters')


if __name__ == '__main__':
    main()
