"""Convert a checkpoint (official mmediting .pth, BasicSR .pth) to this project's .safetensors.

    ciaosr-convert official.pth out.safetensors [--fp16] [--meta key=value] ...

The generator weights are loaded strictly (EMA weights when the file has them) and checked like
`load_model` does (finite float weights, options within bounds), the arch options are stored in the
file's metadata, and an existing output is never overwritten. The output is written atomically.
Every failure is one line on stderr, `error: ...`, with exit status 1 (2 for a bad command line:
options argparse refuses, --meta that is not KEY=VALUE, an output name that does not end in .safetensors).
"""
import os
from pathlib import Path

import torch

from ciaosr_arch import load_model
from ciaosr_arch.files import save_safetensors

from .cli import OneLineParser, UsageError, exit_on_error

RESERVED_METADATA = ('arch', 'format')  # written by save_safetensors itself


def parse_meta(items):
    """{key: value} from KEY=VALUE strings; UsageError for an item without '=' or a key that is empty or reserved."""
    meta = {}
    for item in items:  # (bytes that are not UTF-8, as a shell may pass them, escaped: metadata are UTF-8 text)
        key, sep, value = item.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace').partition('=')
        if not sep or not key:
            raise UsageError(f'--meta takes KEY=VALUE pairs, got {item!r}')
        if key in RESERVED_METADATA:
            raise UsageError(f'--meta {key}=... is reserved (the converter writes {" and ".join(RESERVED_METADATA)})')
        meta[key] = value
    return meta


def check_output(output):
    """Raises unless `output` can be written: UsageError (one line) unless it ends in .safetensors (any letter
    case); FileExistsError if it exists, NotADirectoryError unless it lies in an existing folder, PermissionError
    unless we may write in that folder (each a sentence naming the path)."""
    if output.suffix.lower() != '.safetensors':
        raise UsageError(f'the output must end in .safetensors: {output}')
    if output.exists():
        raise FileExistsError(f'{output} exists; remove it first (nothing is ever overwritten)')
    folder = output.parent
    if not folder.is_dir():
        raise NotADirectoryError(f'the output folder {folder} does not exist or is not a folder')
    if not os.access(folder, os.W_OK):
        raise PermissionError(f'the output folder {folder} is not writable')


def main(argv=None):
    parser = OneLineParser(description=__doc__.splitlines()[0] if __doc__ else None)  # (python -OO: no docstrings)
    parser.add_argument('checkpoint', type=Path)
    parser.add_argument('output', type=Path)
    parser.add_argument('--meta', action='append', default=[], metavar='KEY=VALUE',
                        help='extra metadata to record (repeatable: --meta a=1 --meta b=2)')
    parser.add_argument('--fp16', action='store_true', help='store the weights in float16 (half the file)')
    args = parser.parse_args(argv)
    with exit_on_error():
        meta = parse_meta(args.meta)
        check_output(args.output)
        net = load_model(args.checkpoint)  # CheckpointError
        source = os.fsencode(args.checkpoint.name).decode('utf-8', 'backslashreplace')  # (any file name: as --meta)
        try:
            save_safetensors(net, args.output, net.arch, {'source': source, **meta},
                             torch.float16 if args.fp16 else None, overwrite=False)
        except FileExistsError:
            raise FileExistsError(f'{args.output} was created while converting; remove it first (nothing is ever '
                                  'overwritten)') from None
        except OSError as err:
            raise OSError(f'cannot write {args.output}: {err.strerror or err}') from None
    n_params = sum(p.numel() for p in net.parameters())
    print(f'{args.output}: {net.arch["type"]} ({net.arch["encoder"]}), {n_params:,} parameters')


if __name__ == '__main__':
    main()
