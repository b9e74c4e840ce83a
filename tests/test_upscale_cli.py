"""The batch-upscaling CLI (ciaosr/upscale.py) and its image I/O (the engine's tiling: test_engine.py)."""
import io
import os
import re
import signal
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from ciaosr import image_io, pipeline
from ciaosr import upscale as cli
from ciaosr.cli import cpu_has_bf16
from ciaosr.pipeline import device_memory
from ciaosr_arch import CiaoSR, engine
from ciaosr_arch.errors import byte_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()


def run_cli(*argv, model=None):
    """Exit status of the CLI run in this process (a generous --max-memory unless one is given)."""
    extra = [] if '--max-memory' in argv else ['--max-memory', '64GB']
    return cli.main([str(a) for a in argv] + extra + (['--model', str(model)] if model else []))


def test_batch_of_the_images_people_have(tmp_path, tiny_model, photo, capsys):
    """Every kind of input at x2.5: depth, gray, alpha, EXIF, palette, CMYK, ICC kept; bad files fail alone."""
    src, out = tmp_path / 'in', tmp_path / 'out'
    (src / 'sub').mkdir(parents=True)
    rgb = photo[:24, :32]
    Image.fromarray(rgb).save(src / 'rgb.png', icc_profile=SRGB)
    Image.fromarray(rgb).save(src / 'photo.jpg', quality=95)
    Image.fromarray(rgb[..., 1]).save(src / 'gray.png')
    alpha = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
    Image.fromarray(np.dstack([rgb, alpha])).save(src / 'rgba.webp', lossless=True)
    deep = rgb.astype(np.uint16) * 256 + np.arange(32, dtype=np.uint16)[None, :, None]  # finer than 8 bits
    cv2.imwrite(str(src / 'deep.png'), deep[..., ::-1])
    Image.fromarray(deep[..., 0]).save(src / 'sub' / 'deep_gray.tif')
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[image_io.ORIENTATION_TAG] = 6  # stored sideways: upright it is the 90-degree clockwise turn
    rotated.save(src / 'rotated.png', exif=exif)
    Image.fromarray(np.rot90(rgb, -1).copy()).save(src / 'upright.png')
    Image.fromarray(rgb).convert('P', palette=Image.Palette.ADAPTIVE).save(src / 'palette.gif')
    Image.fromarray(rgb).convert('CMYK').save(src / 'cmyk.jpg')
    (src / 'empty.png').write_bytes(b'')
    (src / 'not_an_image.jpg').write_bytes(b'just some text\n' * 20)
    full = io.BytesIO()
    Image.fromarray(photo).save(full, format='PNG')
    (src / 'truncated.png').write_bytes(full.getvalue()[:len(full.getvalue()) // 2])
    (src / 'notes.txt').write_text('not an image suffix: ignored')

    assert run_cli('-i', src, '-o', out, '-s', 2.5, '--recursive', model=tiny_model) == 1
    captured = capsys.readouterr()
    assert '10 done, 0 skipped, 3 failed' in captured.out
    first, second = captured.out.splitlines()[:2]  # the path taken first (README's demo folder has a README.md)
    assert first.startswith('CPU: ')
    assert second == f'ignored {src / "notes.txt"}: not an image or video this tool reads (.txt)'
    failures = [line for line in captured.err.splitlines() if 'FAILED' in line]
    assert len(failures) == 3 and 'Traceback' not in captured.err
    assert any('empty.png: empty file' in f for f in failures)
    assert any('not_an_image.jpg: not a readable image' in f for f in failures)
    assert any('truncated.png: damaged or truncated' in f for f in failures)

    def read(name):
        return image_io.read_image(out / name)
    assert read('rgb_out.png').pixels.shape == (60, 80, 3) and read('rgb_out.png').icc_profile == SRGB
    assert read('photo_out.jpg').pixels.shape == (60, 80, 3)
    assert read('gray_out.png').pixels.shape == (60, 80, 1)
    with_alpha = read('rgba_out.png').pixels  # alpha: bicubic, written as PNG although the input was WebP
    assert with_alpha.shape == (60, 80, 4)
    expected_alpha = cv2.resize(alpha.astype(np.float32), (80, 60), interpolation=cv2.INTER_CUBIC)
    assert np.abs(with_alpha[..., 3].astype(float) - expected_alpha).max() <= 1
    deep_out = read('deep_out.png').pixels
    assert deep_out.dtype == np.uint16 and deep_out.shape == (60, 80, 3) and np.any(deep_out % 257)
    deep_gray = read('sub/deep_gray_out.tif').pixels
    assert deep_gray.dtype == np.uint16 and deep_gray.shape == (60, 80, 1)
    assert read('rotated_out.png').pixels.shape == (80, 60, 3)
    np.testing.assert_array_equal(read('rotated_out.png').pixels, read('upright_out.png').pixels)
    assert read('palette_out.png').pixels.shape == (60, 80, 3)
    assert read('cmyk_out.jpg').pixels.shape == (60, 80, 3)
    assert sorted(p.name for p in out.rglob('*') if p.name.startswith('.')) == []  # no temporary files left


def test_scales_sizes_and_steps(tmp_path, tiny_model, photo, capsys):
    """Every way to give the output size; an exact size of another shape says on the file's line that it stretches
    (a trial's portrait photo to --size 400x225 was squashed without a word), and --long-side (the web app's, missing
    in the CLI) keeps the aspect of portrait and landscape pictures alike."""
    Image.fromarray(photo[:12, :16]).save(tmp_path / 'small.png')
    Image.fromarray(photo[:16, :12]).save(tmp_path / 'portrait.png')

    def size_of(*argv, name='small'):
        out = tmp_path / f'out{len(list(tmp_path.iterdir()))}'
        assert run_cli('-i', tmp_path / f'{name}.png', '-o', out, *argv, model=tiny_model) == 0
        return Image.open(out / f'{name}_out.png').size, np.asarray(Image.open(out / f'{name}_out.png'))
    assert size_of('-s', 8)[0] == (128, 96)
    assert size_of('-s', 2.7)[0] == (43, 32)
    assert size_of('--size', '48x36')[0] == (48, 36) and 'stretched' not in capsys.readouterr().out
    assert size_of('--size', '50x30')[0] == (50, 30)
    assert '(stretched x3.12 across, x2.5 down: an exact size of another shape; --width' in capsys.readouterr().out
    assert size_of('--width', 40)[0] == (40, 30)
    assert size_of('--height', 45)[0] == (60, 45)
    assert size_of('--long-side', 40)[0] == (40, 30) and size_of('--long-side', 40, name='portrait')[0] == (30, 40)
    single, two_steps = size_of('-s', 5)[1], size_of('-s', 5, '--steps', 2)
    assert two_steps[0] == (80, 60) and not np.array_equal(single, two_steps[1])


def test_byte_size_reads_in_the_unit_that_fits():
    sizes = [0, 1, 1023, 1024, 1536, 345 * 2 ** 20, 2 ** 20 - 1, 2 ** 30 - 2 ** 17, 5 * 2 ** 29, -20 * 2 ** 20,
             3 * 2 ** 40, 2 ** 50]
    assert [byte_size(n) for n in sizes] == ['0 bytes', '1 byte', '1023 bytes', '1 KiB', '1.5 KiB', '345 MiB',
                                             '1 MiB', '1 GiB', '2.5 GiB', '-20 MiB', '3 TiB', '1024 TiB']
    # a least amount is rounded up at the shown precision, never below what is needed
    assert [byte_size(n, up=True) for n in (2.951 * 2 ** 30, 2.96 * 2 ** 30, 99.95 * 2 ** 20, 1000.2, 5 * 2 ** 29)] == [
        '2.96 GiB', '2.96 GiB', '100 MiB', '1001 bytes', '2.5 GiB']


def test_memory_budget_too_small_fails_clearly(tmp_path, tiny_model, photo, monkeypatch, capsys):
    """A budget too small for a file fails that file (exit 1), in units that show it (not '0.00 GiB'); one that the
    memory in use already fills is refused before any file (exit 2)."""
    Image.fromarray(photo[:16, :16]).save(tmp_path / 'a.png')
    argv = ('-i', tmp_path / 'a.png', '-o', tmp_path / 'out', '-s', 16)
    monkeypatch.setattr(pipeline, 'resident_bytes', lambda device: 0)
    assert run_cli(*argv, '--max-memory', '100KB', model=tiny_model) == 1
    assert 'a.png: 16x16: decoding it does not fit in --max-memory 100 KiB (needs ' in capsys.readouterr().err
    monkeypatch.setattr(pipeline, 'resident_bytes', lambda device: 300 * 2 ** 20)
    assert run_cli(*argv, '--max-memory', '1KB', model=tiny_model) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        'error: --max-memory 1 KiB leaves no room for a picture: 300 MiB of it is in use already (by this process: '
        'the model, the libraries), and plans keep 10% of it spare; raise it')
    assert not (tmp_path / 'out' / 'a_out.png').exists()


def test_memory_budget_above_the_machine_warns(tmp_path, tiny_model, photo, capsys):
    Image.fromarray(photo[:16, :16]).save(tmp_path / 'a.png')
    budget = device_memory(torch.device('cpu')) * 2
    assert run_cli('-i', tmp_path / 'a.png', '-o', tmp_path / 'out', '-s', 2, '--max-memory', budget,
                   model=tiny_model) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith('warning: ')]
    assert warnings == [f'warning: --max-memory {byte_size(budget)} is more than this machine has '
                        f'({byte_size(budget / 2)}); runs that need it will swap or be killed']


def test_explicit_tile_is_held_to_the_budget(tmp_path, tiny_model, photo, monkeypatch, capsys):
    """08-explicit-tile-ignores-budget: --tile N skipped the memory plan (peak 1.15 GiB for a 0.90 GiB budget). It
    is refused like an automatic tile that does not fit, naming the largest that would; that one runs."""
    monkeypatch.setattr(pipeline, 'resident_bytes', lambda device: 0)  # the plan without this process's own memory
    Image.fromarray(photo[:64, :64]).save(tmp_path / 'p.png')
    argv = ('-i', tmp_path / 'p.png', '-o', tmp_path / 'out', '-s', 1.5, '--max-memory', '345MB', '--runtime', 'torch')
    assert run_cli(*argv, '--tile', 64, model=tiny_model) == 1
    err = capsys.readouterr().err
    fits = int(re.search(r'--tile 64 does not fit in --max-memory 345 MiB for this image: the largest tile that '
                         r'fits is (\d+); lower --tile or raise --max-memory', err)[1])
    assert engine.MIN_TILE <= fits < 64 and not (tmp_path / 'out' / 'p_out.png').exists()
    assert run_cli(*argv, '--tile', fits, model=tiny_model) == 0
    assert f'(tiles of up to {fits}, overlap' in capsys.readouterr().out


def test_interrupted_run_leaves_no_partial_file_and_resumes(tmp_path, tiny_model, photo, monkeypatch, capsys):
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    for name in ('a', 'b', 'c'):
        Image.fromarray(photo[:16, :20]).save(src / f'{name}.png')
    encode = CiaoSR.encode
    calls = []

    def interrupted_encode(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode(self, *args)
    monkeypatch.setattr(CiaoSR, 'encode', interrupted_encode)
    assert run_cli('-i', src, '-o', out, '-s', 2, model=tiny_model) == 130
    assert sorted(p.name for p in out.iterdir()) == ['a_out.png']
    # the file in progress named, then the line every command ends with on an interrupt
    assert capsys.readouterr().err.splitlines()[-2:] == [f'interrupted {src / "b.png"}: not saved', 'interrupted']

    def failing_fsync(fd):  # dies in the middle of writing the file
        raise KeyboardInterrupt
    monkeypatch.setattr(CiaoSR, 'encode', encode)
    monkeypatch.setattr(os, 'fsync', failing_fsync)
    assert run_cli('-i', src, '-o', out, '-s', 2, '--skip-existing', model=tiny_model) == 130
    assert sorted(p.name for p in out.iterdir()) == ['a_out.png']
    monkeypatch.undo()
    capsys.readouterr()
    assert run_cli('-i', src, '-o', out, '-s', 2, '--skip-existing', model=tiny_model) == 0
    assert '2 done, 1 skipped, 0 failed' in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ['a_out.png', 'b_out.png', 'c_out.png']
    assert Image.open(out / 'b_out.png').size == (40, 32)
    # a trial: x8 with --skip-existing into the folder of a x2 run skipped every file, left at the x2 size
    (out / 'c_out.png').write_bytes(b'damaged')
    assert run_cli('-i', src, '-o', out, '-s', 4, '--skip-existing', model=tiny_model) == 1
    failures = sorted(line for line in capsys.readouterr().err.splitlines() if line.startswith('FAILED'))
    assert failures[0] == (f'FAILED {src / "a.png"}: its output {out / "a_out.png"} exists at 40x32, not the 80x64 of '
                           f'this run; use another -o or --suffix, or run without --skip-existing to replace it')
    assert failures[2].startswith(f'FAILED {src / "c.png"}: its output {out / "c_out.png"} exists but cannot be read (')
    assert Image.open(out / 'a_out.png').size == (40, 32)  # left as it was


@pytest.mark.parametrize('script', ['ciaosr-upscale', 'inference_ciaosr.py'])
def test_sigterm_ends_every_entry_point_like_ctrl_c(tmp_path, tiny_model, photo, script):
    """04-sigterm-console-script: SIGTERM was handled only under `if __name__ == '__main__'`, so the console script
    and inference/inference_ciaosr.py died with 143, no summary, and could leave a hidden .part file."""
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    for k in range(30):
        Image.fromarray(photo[k:k + 48, :48]).save(src / f'img{k:02}.png')
    command = ([os.path.join(os.path.dirname(sys.executable), script)] if script == 'ciaosr-upscale' else
               [sys.executable, os.path.join(ROOT, 'inference', script)])
    run = subprocess.Popen(command + ['-i', str(src), '-o', str(out), '-s', '4', '--model', str(tiny_model),
                                      '--runtime', 'torch', '--threads', '1'],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env={**os.environ, 'PYTHONPATH': ROOT, 'PYTHONUNBUFFERED': '1'})
    for line in run.stdout:
        if ' -> ' in line:  # the first file is written: the run is in the middle of the batch
            break
    run.send_signal(signal.SIGTERM)
    rest = run.stdout.read()
    assert run.wait(timeout=120) == 130
    assert '; interrupted' in rest and not list(out.glob('.*.part'))
    assert 0 < len(list(out.iterdir())) < 30


def test_outputs_too_large_for_their_format_are_planned_as_png(tmp_path, tiny_model, photo, capsys):
    """03-format-size-limits: WebP over 16383 px and JPEG over 65535 px failed after the whole upscale. The plan
    (from the header) writes them as PNG, and the file's line says so."""
    for name in ('strip.webp', 'strip.jpg'):
        Image.fromarray(photo[:1, :64]).save(tmp_path / name)
    for name, width, ext in (('strip.webp', 16383, 'webp'), ('strip.webp', 16384, 'png'),
                             ('strip.jpg', 65535, 'jpg'), ('strip.jpg', 65536, 'png')):
        args = cli.parse_args(['-i', str(tmp_path / name), '-o', str(tmp_path / 'out'), '--size', f'{width}x1'])
        assert [job.dst.name for job in cli.plan_jobs([tmp_path / name], tmp_path, tmp_path / 'out', args)] == [
            f'strip_out.{ext}']
    assert run_cli('-i', tmp_path / 'strip.webp', '-o', tmp_path / 'out', '--size', '16384x1', '--runtime', 'torch',
                   model=tiny_model) == 0
    assert '(16384x1 is over the WEBP limit of 16383 pixels a side: written as PNG)' in capsys.readouterr().out
    assert Image.open(tmp_path / 'out' / 'strip_out.png').size == (16384, 1)


def test_a_file_replaced_during_the_run_is_written_as_read(tmp_path, tiny_model, photo, monkeypatch, capsys):
    """07-file-replaced-during-run: b.jpg became an RGBA PNG after planning: 'cannot write mode RGBA as JPEG'. Now
    it is written as PNG, saying so; where that name is another file's output, it fails with a message."""
    src = tmp_path / 'in'
    src.mkdir()
    for name in ('a.jpg', 'b.jpg', 'c.jpg', 'c.png'):
        Image.fromarray(photo[:8, :8]).save(src / name)
    plan = cli.plan_jobs

    def plan_then_replace(*args):
        jobs = plan(*args)
        for name in ('b.jpg', 'c.jpg'):  # an editor or a sync client saves over them
            Image.fromarray(np.dstack([photo[:8, :8], np.full((8, 8), 200, np.uint8)])).save(src / name, 'PNG')
        return jobs
    monkeypatch.setattr(cli, 'plan_jobs', plan_then_replace)
    assert run_cli('-i', src, '-o', tmp_path / 'out', '-s', 2, '--runtime', 'torch', model=tiny_model) == 1
    captured = capsys.readouterr()
    assert 'b_out.png: 8x8 -> 16x16' in captured.out
    assert 'the file changed during the run; it has alpha: written as PNG, not JPEG' in captured.out
    assert [line for line in captured.err.splitlines() if 'FAILED' in line] == [
        f'FAILED {src / "c.jpg"}: the file changed during the run: its output would now be '
        f'{tmp_path / "out" / "c_out.png"}, the output of another file; run it again on its own']
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['a_out.jpg', 'b_out.png', 'c_out.png']
    assert image_io.read_image(tmp_path / 'out' / 'b_out.png').pixels.shape == (16, 16, 4)
    assert image_io.read_image(tmp_path / 'out' / 'c_out.png').pixels.shape == (16, 16, 3)  # c.png's output


def test_names_that_are_not_utf8_never_fail_a_file(tmp_path, tiny_model, photo, monkeypatch):
    """06-non-utf8-names: under a strict stdout the per-file line could not be printed, so written files were
    reported FAILED (exit 1)."""
    src = tmp_path / 'in'
    src.mkdir()
    for name in (b'\xe9t\xe9_latin1.jpg', b'bad\xff\xfename.png'):  # Latin-1 bytes: surrogates in Python
        Image.fromarray(photo[:8, :8]).save(src / os.fsdecode(name))
    console = io.BytesIO()
    monkeypatch.setattr(sys, 'stdout', io.TextIOWrapper(console, 'utf-8', errors='strict', write_through=True))
    assert run_cli('-i', src, '-o', tmp_path / 'out', '-s', 2, '--runtime', 'torch', model=tiny_model) == 0
    printed = console.getvalue()
    assert b'2 done, 0 skipped, 0 failed' in printed and b'bad\\udcff\\udcfename_out.png' in printed
    written = [b'bad\xff\xfename_out.png', b'\xe9t\xe9_latin1_out.jpg']
    assert sorted(os.listdir(os.fsencode(tmp_path / 'out'))) == written


def test_inputs_are_never_overwritten(tmp_path, tiny_model, photo, capsys):
    Image.fromarray(photo[:8, :8]).save(tmp_path / 'a.png')
    Image.fromarray(photo[:8, :8]).save(tmp_path / 'a.jpg')
    before = (tmp_path / 'a.png').read_bytes()
    assert run_cli('-i', tmp_path, '-o', tmp_path, '-s', 2, '--suffix', '', '--ext', 'png', model=tiny_model) == 1
    err = capsys.readouterr().err
    assert 'is an input file; refusing to overwrite it' in err and 'is also the output of' not in err
    assert (tmp_path / 'a.png').read_bytes() == before


def test_rank_sharding_under_torchrun(tmp_path, tiny_model, photo):
    """2 CPU ranks split 5 photos and a broken one: every photo done exactly once, by one rank. The ranks end together
    (torchrun stops every rank once one exits with an error status: a rank whose file failed could cut the other's
    share short), rank 0 with the run's total, in which a broken video (which both ranks take) counts once."""
    src = tmp_path / 'in'
    src.mkdir()
    for k in range(5):  # rank 0 takes img0, img1, img3 (sorted names, every other one)
        Image.fromarray(photo[k:k + 8, :10]).save(src / f'img{k}.png')
    (src / 'img0x.png').write_bytes(b'not a PNG')  # rank 1's first photo
    (src / 'clip.mp4').write_bytes(b'not a video')
    torchrun = os.path.join(os.path.dirname(sys.executable), 'torchrun')
    script = os.path.join(ROOT, 'inference', 'inference_ciaosr.py')
    result = subprocess.run([torchrun, '--standalone', '--nproc_per_node=2', script,
                             '-i', str(src), '-o', str(tmp_path / 'out'), '-s', '2', '--model', str(tiny_model),
                             '--max-memory', '64GB'],
                            capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 1, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [f'img{k}_out.png' for k in range(5)]
    # the ranks share the pipes: a file's line can follow another rank's progress bar in the same line
    done = re.findall(r'\[rank \d/2\] (\S+) -> ', result.stdout + result.stderr)
    assert sorted(os.path.basename(path) for path in done) == [f'img{k}.png' for k in range(5)]
    assert '[rank 0/2] 3 done, 0 skipped, 1 failed' in result.stdout
    assert '[rank 1/2] 2 done, 0 skipped, 2 failed' in result.stdout
    assert 'all 2 ranks: 5 done, 0 skipped, 2 failed' in result.stdout
    assert 'interrupted' not in result.stdout + result.stderr


@pytest.mark.parametrize('text', ['4', 'x4', '4x', '×4', ' X4 ', '4.0'])
def test_scale_as_the_field_writes_it(tmp_path, text):
    """A trial: `-s x4` (as our reports label scales) failed with "invalid float value"."""
    assert cli.parse_args(['-i', str(tmp_path), '-o', str(tmp_path / 'out'), '-s', text]).scale == 4.0


@pytest.mark.parametrize('argv,message', [
    (['-s', '1'], '--scale: the scale must be a finite number > 1, got 1.0'),
    (['-s', 'x0.5'], '--scale: the scale must be a finite number > 1, got 0.5'),
    (['-s', 'nan'], '--scale: the scale must be a finite number > 1'),
    (['-s', 'inf'], '--scale: the scale must be a finite number > 1'),
    (['-s', 'four'], "--scale: a scale must be a number such as 4, 2.7 or x4, got 'four'"),
    (['-s', 'xx4'], "--scale: a scale must be a number such as 4, 2.7 or x4, got 'xx4'"),
    (['-s', '2', '--size', '64x64'], 'give only one of --scale, --size, --width/--height and --long-side (got scale '
                                     'and size)'),
    (['--width', '64', '--long-side', '64'], '(got long-side and width/height)'),
    (['--long-side', '0'], '--long-side must be a positive number'),
    (['--size', '64by64'], '--size must be WIDTHxHEIGHT'),
    (['--width', '0'], '--width must be a positive number'),
    (['--steps', '0'], '--steps must be at least 1'),
    (['--tile', '40', '--tile-overlap', '30'], '--tile-overlap must be between 0 and half the tile (at most 20'),
    (['--tile-overlap', '-1'], '--tile-overlap must be >= 0'),
    (['--tile', '4'], '--tile must be 0 (automatic) or at least 8'),
    (['--tile', '-3'], '--tile must be 0 (automatic) or at least 8'),
    (['--max-memory', 'lots'], '--max-memory must be a size such as 4GB'),
])
def test_bad_arguments_fail_in_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['-i', str(tmp_path), '-o', str(tmp_path / 'out'), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and err.count('\n') == 1, err  # one line, no usage block


def test_bad_setup_fails_in_one_line(tmp_path, tiny_model, photo, capsys, monkeypatch):
    Image.fromarray(photo[:8, :8]).save(tmp_path / 'a.png')
    (tmp_path / 'empty_dir').mkdir()
    monkeypatch.setattr('ciaosr_arch.shipped.WEIGHTS_DIR', tmp_path / 'weights')  # no shipped file there
    cases = [(['-i', tmp_path / 'a.png'], 'the default weights are missing', 1),
             (['-i', tmp_path / 'a.png', '--model', tmp_path / 'nope.pth'], 'checkpoint not found', 1),
             (['-i', tmp_path / 'a.png', '--model', 'rea1'], 'name of a shipped model: default, real-l1, real', 1),
             (['-i', tmp_path / 'nowhere'], 'input not found', 1),
             (['-i', tmp_path / 'empty_dir'], 'no images', 1),
             (['-i', tmp_path / 'a.png', '--model', tiny_model, '--fp16', '--device', 'cpu'], '--fp16 needs a CUDA', 2)]
    for argv, message, status in cases:  # inputs and checkpoints: 1; a command line this machine cannot run: 2
        assert run_cli(*argv, '-o', tmp_path / 'out', '-s', 2) == status
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: ') and message in err[0]


def test_fp16_on_a_cpu_points_to_what_runs_on_it(monkeypatch):
    """A trial on an AVX2 CPU: '--fp16 ...; on CPU use --bf16', then '--bf16: this device has no native bfloat16'."""
    from ciaosr.cli import UsageError, pick_precision
    for native, hint in ((True, 'on this CPU use --bf16$'), (False, 'on this CPU use float32 \\(no flag: it has no')):
        monkeypatch.setattr('ciaosr.cli.cpu_has_bf16', lambda native=native: native)
        with pytest.raises(UsageError, match=f'^--fp16 needs a CUDA device; {hint}'):
            pick_precision(torch.device('cpu'), fp16=True)


def test_bf16_is_native_only_on_cpus_of_the_bf16_kind(monkeypatch):
    """A review: oneDNN counts plain AVX-512 (Skylake, Cascade Lake), where it emulates bf16, as bf16 support."""
    from ciaosr.cli import cpu_has_bf16
    monkeypatch.setattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', lambda: True)
    for kind, native in (('avx512-vnni', False), ('avx512', False), ('avx2', False), ('avx512-bf16', True)):
        monkeypatch.setattr('ciaosr_arch.runtime.cpu_kind', lambda kind=kind: kind)
        assert cpu_has_bf16() is native


def test_bf16_is_offered_on_gpus_that_compute_it(monkeypatch):
    """A review: `torch.cuda.is_bf16_supported()` says yes on a V100 or T4, which only emulate bfloat16 (slowly)."""
    from types import SimpleNamespace

    from ciaosr.cli import UsageError, pick_precision
    gpu = torch.device('cuda', 1)
    asked = []
    for major in (7, 8):
        monkeypatch.setattr(torch.cuda, 'get_device_properties', lambda d, major=major: asked.append(d) or
                            SimpleNamespace(major=major))
        if major < 8:
            with pytest.raises(UsageError, match='^--bf16: this device has no native bfloat16 support'):
                pick_precision(gpu, bf16=True)
        else:
            assert pick_precision(gpu, bf16=True) == torch.bfloat16
    assert asked == [gpu, gpu]  # the GPU asked about, not the current one


def test_16bit_colour_and_icc_round_trip(tmp_path):
    deep = np.random.default_rng(0).integers(0, 65536, (5, 7, 4), dtype=np.uint16)
    for channels, ext in ((3, 'png'), (4, 'png'), (3, 'tiff'), (4, 'tiff'), (1, 'png'), (1, 'tiff')):
        picture = image_io.Picture(deep[..., :channels], SRGB)
        (tmp_path / f'x.{ext}').write_bytes(image_io.encode_image(picture, ext))
        back = image_io.read_image(tmp_path / f'x.{ext}')
        np.testing.assert_array_equal(back.pixels, picture.pixels)
        assert back.icc_profile == SRGB


def camera_exif(orientation=6):
    """An EXIF block as a phone writes one: make, model, orientation, date taken and the image size in its Exif
    directory, position in its GPS directory."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[image_io.ORIENTATION_TAG] = 'PhoneMaker', 'Phone 12', orientation
    exif.get_ifd(image_io.EXIF_IFD).update({0x9003: '2025:06:01 10:00:00', image_io.PIXEL_X_TAG: 16,
                                            image_io.PIXEL_Y_TAG: 12})
    exif.get_ifd(0x8825).update({1: 'N', 2: (52.0, 30.0, 0.0)})
    return exif.tobytes()


def test_camera_exif_is_kept_upright_and_resized(tmp_path, tiny_model, photo):
    """A trial's phone JPEG lost every EXIF tag (date taken, camera, GPS: photo libraries sorted the results wrong);
    now each written format keeps the block, with the orientation 1 (the pixels are turned upright) and the image
    size tags of the output; 16-bit PNGs (OpenCV's) too, through an eXIf chunk."""
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    for ext in ('jpg', 'png', 'webp', 'avif'):
        Image.fromarray(photo[:12, :16]).save(src / f'phone_{ext}.{ext}', exif=camera_exif())
    deep = np.random.default_rng(0).integers(0, 65536, (12, 16, 3), dtype=np.uint16)
    (src / 'deep.png').write_bytes(image_io.encode_image(image_io.Picture(deep, None, camera_exif(1)), 'png'))
    assert run_cli('-i', src, '-o', out, '-s', 2, model=tiny_model) == 0
    outputs = ['phone_jpg_out.jpg', 'phone_png_out.png', 'phone_webp_out.webp', 'phone_avif_out.avif', 'deep_out.png']
    for name, size in zip(outputs, [(24, 32)] * 4 + [(32, 24)]):
        with Image.open(out / name) as image:
            exif = image.getexif()
            upright = exif.get(image_io.ORIENTATION_TAG, 1) == 1  # (Pillow's AVIF writer leaves out a 1)
            assert image.size == size and exif[0x010F] == 'PhoneMaker' and upright, name
            details = exif.get_ifd(image_io.EXIF_IFD)
            assert (details[image_io.PIXEL_X_TAG], details[image_io.PIXEL_Y_TAG]) == size, name
            assert details[0x9003] == '2025:06:01 10:00:00' and exif.get_ifd(0x8825)[1] == 'N', name
    assert image_io.read_image(out / 'deep_out.png').pixels.dtype == np.uint16


def test_exif_that_pillow_cannot_write_back_is_dropped_not_the_picture(tmp_path):
    """A review's cases: a Make tag stored as a RATIONAL (Pillow's writer raised AttributeError) and a damaged byte
    order mark (SyntaxError) made read_image fail; a camera block into TIFF (its writer refuses an Exif directory)
    failed the encode after the whole upscale."""
    entries = [(0x010F, 5, 1, 38), (image_io.ORIENTATION_TAG, 3, 1, 6)]  # Make as RATIONAL at offset 38
    ifd = struct.pack('<H', 2) + b''.join(struct.pack('<HHII', *entry) for entry in entries) + struct.pack('<I', 0)
    wrong_type = b'Exif\0\0II*\0' + struct.pack('<I', 8) + ifd + struct.pack('<II', 1, 3)
    for name, block in (('wrong_type', wrong_type), ('bad_order', b'Exif\0\0XX*\0' + wrong_type[10:])):
        Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / f'{name}.jpg', exif=block)
        picture = image_io.read_image(tmp_path / f'{name}.jpg')
        assert picture.exif is None and picture.pixels.shape[:2] in ((12, 16), (16, 12)), name
    camera = image_io.Picture(np.zeros((12, 16, 3), np.uint8), None, camera_exif(1))
    with Image.open(io.BytesIO(image_io.encode_image(camera, 'tif'))) as tiff:
        assert tiff.size == (16, 12) and 0x010F not in tiff.getexif()


def test_absurdly_large_input_is_refused(tmp_path, photo, monkeypatch):
    Image.fromarray(photo[:30, :40]).save(tmp_path / 'big.png')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 500)  # stands for PIL's ~89-megapixel decompression-bomb limit
    with pytest.raises(image_io.ImageReadError, match='too large'):
        image_io.read_image(tmp_path / 'big.png')
    # this tool's own outputs may be larger (the memory plan allowed them): --skip-existing reads their size
    assert image_io.written_size(tmp_path / 'big.png') == (30, 40) and Image.MAX_IMAGE_PIXELS == 500


def test_bf16_autocast_on_cpu(tmp_path, tiny_model, photo, psnr, capsys):
    Image.fromarray(photo[:16, :16]).save(tmp_path / 'a.png')
    status = run_cli('-i', tmp_path / 'a.png', '-o', tmp_path / 'bf16', '-s', 3, '--bf16', '--device', 'cpu',
                     model=tiny_model)
    if not cpu_has_bf16():
        assert status == 2 and 'no native bfloat16 support' in capsys.readouterr().err
        return
    assert status == 0 and run_cli('-i', tmp_path / 'a.png', '-o', tmp_path / 'fp32', '-s', 3, model=tiny_model) == 0
    low, full = (np.asarray(Image.open(tmp_path / d / 'a_out.png'), np.float64) / 255 for d in ('bf16', 'fp32'))
    assert 35 < psnr(low, full) < 100
