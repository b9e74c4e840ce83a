"""Files are written whole or not at all (ciaosr_arch/files.py): the one atomic writer behind the images, the app's
zip, the video segments, the weights and the OpenVINO graph cache."""
import errno
import os

import pytest

from ciaosr_arch.files import PARTIAL_FILE, atomic_file, atomic_path, is_abandoned


def test_atomic_file_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / 'net_g_10.pth'
    path.write_bytes(b'complete old file')
    with pytest.raises(RuntimeError, match='killed'), atomic_file(path) as file:
        file.write(b'half of the new')
        raise RuntimeError('killed while writing')
    assert path.read_bytes() == b'complete old file'
    with atomic_file(path) as file:
        file.write(b'new')
    assert path.read_bytes() == b'new' and sorted(p.name for p in tmp_path.iterdir()) == ['net_g_10.pth']


def test_atomic_path_syncs_then_renames_and_cleans_up(tmp_path, monkeypatch):
    """A writer that takes a path writes a hidden temporary file beside the target (with the suffix it asks for),
    which is fsynced before it is renamed over the target; on an error it is removed and the target stays."""
    path = tmp_path / 'graph.xml'
    path.write_text('old graph')
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(os.fstat(fd).st_ino) or real_fsync(fd))
    with pytest.raises(OSError, match='No space'), atomic_path(path, '.xml') as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith('.graph.xml.')
        assert temporary.name.endswith('.part.xml') and PARTIAL_FILE.fullmatch(temporary.name[:-4])
        temporary.write_text('half a gra')
        raise OSError(28, 'No space left on device')
    assert path.read_text() == 'old graph' and [p.name for p in tmp_path.iterdir()] == ['graph.xml']
    with atomic_path(path) as temporary:
        temporary.write_text('new graph')
    assert path.read_text() == 'new graph' and [p.name for p in tmp_path.iterdir()] == ['graph.xml']
    assert synced == [path.stat().st_ino, tmp_path.stat().st_ino]  # the file's data, then the rename (POSIX)
    with pytest.raises(FileNotFoundError), atomic_path(path):
        pass  # nothing written: refused, the target stays
    assert path.read_text() == 'new graph'


def test_temporary_files_of_a_live_writer_are_not_abandoned(tmp_path):
    with atomic_file(tmp_path / 'out.png') as file:
        temporary = next(tmp_path.glob('.out.png.*.part'))
        assert PARTIAL_FILE.fullmatch(temporary.name) and not is_abandoned(temporary)
        file.write(b'png')
    assert not is_abandoned(tmp_path / 'out.png')


def test_temporary_names_of_long_names_fit_and_stay_text(tmp_path):
    """A review: '.NAME.PID-XXXXXXXX.part' of a 230-character name was too long for the file system, and cutting it by
    bytes could split a character (a name that is not UTF-8: refused by APFS)."""
    for name in ('a' * 240 + '.safetensors', 'é' * 120 + '.png'):
        with atomic_path(tmp_path / name) as temporary:
            assert len(os.fsencode(temporary.name)) <= 255 and temporary.name.encode('utf-8')
            temporary.write_bytes(b'x')
        assert (tmp_path / name).read_bytes() == b'x'


def test_no_overwrite_without_hard_links(tmp_path, monkeypatch):
    """`overwrite=False` links the finished file into place (FileExistsError if one appeared); where the file system
    has no hard links (FAT, some shares), it is renamed if nothing is there."""
    def no_links(source, target):
        raise PermissionError(errno.EPERM, 'Operation not permitted')
    monkeypatch.setattr(os, 'link', no_links)
    with atomic_file(tmp_path / 'new.bin', overwrite=False) as file:
        file.write(b'new')
    assert (tmp_path / 'new.bin').read_bytes() == b'new'
    with pytest.raises(FileExistsError), atomic_file(tmp_path / 'new.bin', overwrite=False) as file:
        file.write(b'other')
    assert (tmp_path / 'new.bin').read_bytes() == b'new' and [p.name for p in tmp_path.iterdir()] == ['new.bin']
