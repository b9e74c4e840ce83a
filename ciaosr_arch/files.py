"""Every file this project writes is written whole or not at all: `atomic_file` (a file object) and `atomic_path`
(a path, for writers that open files themselves: a video muxer, OpenVINO), used by the image, zip, video, weights
and graph-cache writers alike; `is_abandoned` recognises a temporary file whose writer was killed. Also the writer of
weights files, `save_safetensors` (read back by `checkpoint.read_checkpoint`).
"""
import errno
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

NAME_BYTES = 255  # the longest file name (bytes) of common file systems (ext4, XFS, Btrfs, APFS, NTFS in UTF-16 units)
# The temporary files of `atomic_path` and `atomic_file`: .NAME.PID-XXXXXXXX.part, PID the writing process
PARTIAL_FILE = re.compile(r'\..+\.(\d+)-[0-9a-f]{8}\.part')


@contextmanager
def atomic_path(path: str | Path, suffix: str = '', overwrite: bool = True) -> Iterator[Path]:
    """A temporary path for writing `path` all at once: a hidden `.NAME.PID-XXXXXXXX.part` file in the same folder
    (PID: this process; NAME cut to fit a file name's NAME_BYTES; `suffix` appended for writers that check the
    name's ending, e.g. '.xml'). When the block ends without an error, the file written there is fsynced and renamed
    over `path` (with `overwrite=False`, linked to `path`, which fails with FileExistsError if a file appeared there
    meanwhile, then removed; where the file system has no hard links, renamed if nothing is there just before),
    then the folder is fsynced.

    An error or a kill inside the block leaves `path` as it was (absent or the previous complete file); on an
    error the temporary file is removed (a SIGKILL can leave it behind, hidden: see `is_abandoned`). Raises
    OSError if the folder cannot be written or nothing was written at the temporary path.
    """
    path = Path(path)
    name = os.fsencode(path.name)[:NAME_BYTES - 32 - len(os.fsencode(suffix))].decode('utf-8', 'ignore')  # (whole
    # characters: a cut one, or bytes that are not UTF-8, are left out)
    temporary = path.with_name(f'.{name}.{os.getpid()}-{secrets.token_hex(4)}.part{suffix}')
    try:
        yield temporary
        with open(temporary, 'rb+') as file:  # writable: Windows fsyncs only those
            os.fsync(file.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # FileExistsError if there is a file there now
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links (FAT, some network shares): checked, then renamed
                if path.exists():
                    raise FileExistsError(errno.EEXIST, 'File exists', str(path)) from None
                os.replace(temporary, path)
            temporary.unlink(missing_ok=True)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if os.name == 'posix':  # make the rename itself durable
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


@contextmanager
def atomic_file(path: str | Path, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Binary file object for writing `path` all at once (`atomic_path`: a hidden `.NAME.PID-XXXXXXXX.part` file in
    the same folder, closed, fsynced and renamed over `path` when the block ends without an error; with
    `overwrite=False`, FileExistsError instead if `path` exists by then).

    An error or a kill inside the block leaves `path` as it was; on an error the temporary file is removed. Raises
    OSError if the folder cannot be written.
    """
    with atomic_path(path, overwrite=overwrite) as temporary, open(temporary, 'xb') as file:
        yield file


def is_abandoned(path: str | Path) -> bool:
    """Whether `path` is a temporary file of `atomic_file` whose writer is gone: its name has `atomic_file`'s form
    and the process whose id it holds no longer runs on this machine. Anything else, including a file whose writer
    may still run (or whose process id was taken by another process since), is not abandoned. Always False where
    processes cannot be checked without side effects (not POSIX)."""
    match = PARTIAL_FILE.fullmatch(Path(path).name)
    if not match or os.name != 'posix':
        return False
    try:
        os.kill(int(match[1]), 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # another user's process; not a process id: not ours to judge
        pass
    return False


def save_safetensors(net: nn.Module, path: str | Path, arch: Mapping[str, Any],
                     metadata: Mapping[str, Any] | None = None, dtype: torch.dtype | None = None,
                     overwrite: bool = True) -> None:
    """Write net's weights with its arch dict (and free-form string metadata) to a .safetensors file, atomically
    (`atomic_file`; with `overwrite=False` FileExistsError if `path` exists when it is complete); `dtype` (e.g.
    torch.float16: half the file) converts the floating-point tensors, which load back into fp32 networks. The
    metadata keys 'format' and 'arch' are this function's. ValueError, before anything is written, for weights that
    `dtype` cannot hold (finite values beyond float16's 65504 become infinite); OSError if it cannot write."""
    meta = {**{k: str(v) for k, v in (metadata or {}).items()}, 'format': 'pt', 'arch': json.dumps(arch)}
    tensors = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in net.state_dict().items()}
    overflow = [k for k, v in tensors.items() if dtype and v.is_floating_point() and not torch.isfinite(v).all()]
    if overflow:
        raise ValueError(f'{str(dtype).removeprefix("torch.")} cannot hold the weights of {", ".join(overflow[:4])}'
                         f'{" ..." if len(overflow) > 4 else ""} (values beyond its range); keep them in float32')
    with atomic_file(path, overwrite) as file:
        file.write(safetensors_bytes(tensors, metadata=meta))
