"""Image files and folders across the tools: each is handled right or refused in one line, never
silently and never over the memory budget (CLI, image_io, benchmark). Most inputs come from the shared
test-case generators, run into tmp folders."""
import json
import math
import os
import runpy
import struct
import subprocess
import sys
import textwrap
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from ciaosr import benchmark, image_io, pipeline
from ciaosr import upscale as cli
from ciaosr_arch import load_model, super_resolve
from ciaosr_arch.files import atomic_file, save_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = os.path.join(os.path.dirname(ROOT), 'shared', 'cases')
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()


def make_case(name, folder, monkeypatch):
    """The inputs of the shared test case NAME, written by its make.py into folder/in; returns that folder."""
    folder.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(folder)
    runpy.run_path(os.path.join(CASES, name, 'make.py'))
    monkeypatch.chdir(ROOT)
    return folder / 'in'


def run_cli(*argv, model=None):
    """Exit status of the CLI run in this process (a generous --max-memory unless one is given)."""
    extra = [] if '--max-memory' in argv else ['--max-memory', '64GB']
    return cli.main([str(a) for a in argv] + extra + (['--model', str(model)] if model else []))


def failures(err):
    return [line for line in err.splitlines() if 'FAILED' in line]


def strict_json(text):
    """json.loads that rejects NaN and Infinity, which are not JSON."""
    def refuse(constant):
        raise ValueError(f'{constant} is not valid JSON')
    return json.loads(text, parse_constant=refuse)


# 1. Transparency

def test_colour_under_transparent_pixels_does_not_show(tmp_path, tiny_model, monkeypatch, capsys):
    """alpha_halo: black or white under alpha 0 gives the same visible result, and edge pixels keep the disc's
    colour (before: dark fringes of about (4, 1, 0) where alpha < 64)."""
    src = make_case('alpha_halo', tmp_path / 'case', monkeypatch)
    assert run_cli('-i', src, '-o', tmp_path / 'out', '-s', 2.5, model=tiny_model) == 0
    for edge in ('hard', 'soft'):
        black, white = (np.asarray(Image.open(tmp_path / 'out' / f'{edge}_{under}_out.png')).astype(float)
                        for under in ('black', 'white'))
        assert black.shape == (120, 120, 4)
        visible = [image[..., :3] * image[..., 3:] / 255 for image in (black, white)]
        assert np.abs(visible[0] - visible[1]).max() <= 1
        fringe = (black[..., 3] > 0) & (black[..., 3] < 64)
        assert fringe.sum() > 50
        centre = black[60, 60, :3]
        assert np.abs(black[fringe][:, :3] - centre).max() <= 2, 'edge pixels must keep the colour of the disc'


def png_with_trns(pixels, key):
    """PNG bytes of 16-bit pixels [H, W] or [H, W, 3] (RGB) with a tRNS chunk naming `key` (a gray value or an RGB
    triple) transparent: what neither PIL nor OpenCV writes."""
    png = cv2.imencode('.png', pixels if pixels.ndim == 2 else pixels[..., ::-1])[1].tobytes()
    body = b'tRNS' + struct.pack(f'>{len(key)}H', *key)
    return png[:33] + struct.pack('>I', len(body) - 4) + body + struct.pack('>I', zlib.crc32(body)) + png[33:]  # after
    # IHDR (33 bytes with the signature), before IDAT


@pytest.mark.parametrize('colour', [True, False])
def test_16bit_pngs_with_a_transparent_colour_keep_it(tmp_path, tiny_model, colour):
    """A review: a 16-bit RGB PNG with tRNS read as 4 channels (OpenCV takes tRNS as alpha) against the header's 3,
    so every such file failed with 'the file changed'; a 16-bit gray one lost its transparency."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((10, 12, 3) if colour else (10, 12)) * 60000).astype(np.uint16) + 1000
    key = (7, 8, 9) if colour else (7,)
    pixels[0, 0] = key if colour else key[0]
    (tmp_path / 'in.png').write_bytes(png_with_trns(pixels, key))
    info, picture = image_io.probe_image(tmp_path / 'in.png'), image_io.read_image(tmp_path / 'in.png')
    assert info.channels == picture.pixels.shape[2] == (4 if colour else 2) and picture.pixels.dtype == np.uint16
    assert picture.pixels[0, 0, -1] == 0 and (picture.pixels[..., -1] == 65535).sum() == 119
    done = pipeline.Upscaler(load_model(tiny_model), torch.device('cpu')).upscale_file(
        tmp_path / 'in.png', tmp_path / 'out.png', pipeline.Target(scale=2))
    out = image_io.read_image(done.dst).pixels
    assert out.shape == (20, 24, 4) and out.dtype == np.uint16 and out[0, 0, 3] == 0 and out[-1, -1, 3] == 65535


def test_bleed_colour_takes_the_nearest_visible_pixel():
    colour = np.zeros((3, 5, 3), np.uint8)
    colour[1, 0], colour[1, 4] = (200, 10, 10), (10, 10, 200)
    alpha = np.zeros((3, 5), np.uint8)
    alpha[1, 0], alpha[1, 4] = 255, 1
    filled = pipeline.bleed_colour(colour, alpha)
    np.testing.assert_array_equal(filled[:, :2], np.broadcast_to([200, 10, 10], (3, 2, 3)))
    np.testing.assert_array_equal(filled[:, 3:], np.broadcast_to([10, 10, 200], (3, 2, 3)))
    assert filled[1, 2].tolist() in ([200, 10, 10], [10, 10, 200])  # equally near to both
    assert colour[0, 0].tolist() == [0, 0, 0]  # a copy
    assert pipeline.bleed_colour(colour, np.ones_like(alpha)) is colour
    np.testing.assert_array_equal(pipeline.bleed_colour(colour + 7, np.zeros_like(alpha)), 0)


# 2. Any size >= 1 pixel

def test_tiny_images_through_the_cli(tmp_path, tiny_model, monkeypatch, capsys):
    src = make_case('tiny_images', tmp_path / 'case', monkeypatch)
    assert run_cli('-i', src, '-o', tmp_path / 'out', '-s', 3.3, model=tiny_model) == 0
    assert '5 done, 0 skipped, 0 failed' in capsys.readouterr().out
    sizes = {p.name: Image.open(p).size for p in (tmp_path / 'out').iterdir()}
    assert sizes == {'w1_h1_out.png': (3, 3), 'w9_h1_out.png': (30, 3), 'w2_h2_out.png': (7, 7),
                     'w3_h3_out.png': (10, 10), 'w300_h2_out.png': (990, 7)}
    assert run_cli('-i', src / 'w1_h1.png', '-o', tmp_path / 'steps', '--size', '5x2', '--steps', 2,
                   model=tiny_model) == 0


def test_too_large_tile_overlap_gets_its_own_message(tmp_path, tiny_model, capsys):
    """The automatic tile on a CPU is at most 64 LR pixels for a model with the cross-scale attention (the tiny
    model has it): an overlap of 300 cannot fit in it (refused from the
    header, before decoding, naming the cap); the same overlap on an image that runs whole is no problem."""
    Image.fromarray(np.zeros((4, 2000, 3), np.uint8)).save(tmp_path / 'long.png')
    assert run_cli('-i', tmp_path / 'long.png', '-o', tmp_path / 'out', '-s', 2, '--tile-overlap', 300,
                   model=tiny_model) == 1
    err = capsys.readouterr().err
    assert '--tile-overlap 300 needs LR tiles of at least 600 pixels, but the automatic tile is 64 here' in err
    assert 'at most 64 on CPU); lower --tile-overlap, or give --tile' in failures(err)[0]
    assert 'does not fit' not in err
    Image.fromarray(np.zeros((4, 20, 3), np.uint8)).save(tmp_path / 'short.png')
    assert run_cli('-i', tmp_path / 'short.png', '-o', tmp_path / 'out', '-s', 2, '--tile-overlap', 300,
                   model=tiny_model) == 0


def test_benchmark_refuses_tiles_below_the_minimum(capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--tile', '4'])
    assert '--tile must be 0 (whole images) or at least 8' in capsys.readouterr().err


# 3. Gray stored as RGB

def test_gray_stored_as_rgb_comes_out_neutral(tmp_path, tiny_model, monkeypatch):
    """gray_as_rgb: R = G = B in, R = G = B out (before: up to 36 levels of channel spread)."""
    src = make_case('gray_as_rgb', tmp_path / 'case', monkeypatch)
    rgb = np.asarray(Image.open(src / 'gray_as_rgb.jpg'))
    assert rgb.shape == (48, 48, 3) and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert run_cli('-i', src, '-o', tmp_path / 'png', '-s', 2, '--ext', 'png', model=tiny_model) == 0
    out = np.asarray(Image.open(tmp_path / 'png' / 'gray_as_rgb_out.png')).astype(int)
    assert out.shape == (96, 96, 3) and (out.max(-1) == out.min(-1)).all() and out.std() > 20
    assert np.asarray(Image.open(tmp_path / 'png' / 'gray_L_out.png')).shape == (96, 96)
    assert run_cli('-i', src / 'gray_as_rgb.jpg', '-o', tmp_path / 'jpg', '-s', 2, model=tiny_model) == 0
    jpeg = np.asarray(Image.open(tmp_path / 'jpg' / 'gray_as_rgb_out.jpg')).astype(int)
    assert jpeg.shape == (96, 96, 3) and (jpeg.max(-1) - jpeg.min(-1)).max() <= 1
    colour = rgb.copy()
    colour[0, 0, 0] ^= 1  # one level off anywhere: a colour image, upscaled as colour
    Image.fromarray(colour).save(tmp_path / 'colour.png')
    assert run_cli('-i', tmp_path / 'colour.png', '-o', tmp_path / 'colour', '-s', 2, model=tiny_model) == 0
    out = np.asarray(Image.open(tmp_path / 'colour' / 'colour_out.png')).astype(int)
    assert (out.max(-1) - out.min(-1)).max() > 1


# 4. Animations

def test_animations_and_multi_page_files_are_refused_in_one_line(tmp_path, tiny_model, monkeypatch, capsys):
    src = make_case('animated', tmp_path / 'case', monkeypatch)
    frames = [Image.new('RGB', (16, 16), (40 * k, 0, 0)) for k in range(3)]
    frames[0].save(src / 'anim.webp', save_all=True, append_images=frames[1:], duration=80, loop=0, lossless=True)
    frames[0].save(src / 'pages.tif', save_all=True, append_images=frames[1:2])
    frames[0].save(src / 'still.gif')
    assert run_cli('-i', src, '-o', tmp_path / 'out', '-s', 2, model=tiny_model) == 1
    captured = capsys.readouterr()
    assert '1 done, 0 skipped, 4 failed' in captured.out
    lines = sorted(failures(captured.err))
    assert len(lines) == 4 and 'Traceback' not in captured.err
    assert lines[0].endswith('anim.gif: animated GIF (4 frames): animations are not supported; extract the frames '
                             'first')
    assert lines[1].endswith('anim.webp: animated WEBP (3 frames): animations are not supported; extract the frames '
                             'first')
    assert lines[2].endswith('anim_apng.png: animated PNG (4 frames): animations are not supported; extract the '
                             'frames first')
    assert lines[3].endswith('pages.tif: multi-page TIFF (2 pages): only single images are supported; split the '
                             'pages first')
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['still_out.png']
    with pytest.raises(image_io.ImageReadError, match='animated GIF'):
        image_io.read_image(src / 'anim.gif')


# 5. Bit depth, profiles, floating point

def test_benchmark_reads_16bit_images_through_image_io(tmp_path, shared_data):
    """A 16-bit gray PNG was read as all 255 (PSNR inf); now it is the image, rounded to 8 bits."""
    gray8 = np.asarray(Image.open(shared_data / 'Set14' / 'bridge.png'))[:96, :96]
    gray16 = (gray8.astype(np.uint32) * 257 + 100).clip(max=65535).astype(np.uint16)  # rounds back to gray8
    folder = tmp_path / 'data' / 'Deep'
    folder.mkdir(parents=True)
    Image.fromarray(gray16).save(folder / 'gray16.png')
    cv2.imwrite(str(folder / 'rgb16.png'), np.dstack([gray16, gray16 // 2, gray16 // 3])[..., ::-1])
    np.testing.assert_array_equal(benchmark.load_hr(folder / 'gray16.png'), gray8)
    rgb = benchmark.load_hr(folder / 'rgb16.png')
    assert rgb.shape == (96, 96, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], gray8)
    records = benchmark.run(['--model', 'bicubic', '--data-root', str(tmp_path / 'data'), '--datasets', 'Deep',
                              '--scales', '2'])
    assert records[0]['n_images'] == 2 and 20 < records[0]['psnr'] < 60


def test_as_rgb_of_every_channel_layout_and_depth():
    """Gray copied to RGB, alpha dropped or kept, 16 bits rounded to 8 as the writer does: round(x / 257)."""
    deep = np.arange(65536, dtype=np.uint16).reshape(256, 256, 1)
    np.testing.assert_array_equal(image_io.as_rgb(deep), np.repeat(np.round(deep / 257), 3, axis=2))
    rgba = np.random.default_rng(5).integers(0, 65536, (4, 6, 4), dtype=np.uint16)
    eight = np.round(rgba / 257).astype(np.uint8)
    for channels, rgb, with_alpha in [(1, [0, 0, 0], [0, 0, 0]), (2, [0, 0, 0], [0, 0, 0, 1]),
                                      (3, [0, 1, 2], [0, 1, 2]), (4, [0, 1, 2], [0, 1, 2, 3])]:
        for alpha, picked in ((False, rgb), (True, with_alpha)):
            out = image_io.as_rgb(rgba[..., :channels], alpha=alpha)
            assert out.dtype == np.uint8
            np.testing.assert_array_equal(out, eight[..., picked])
            np.testing.assert_array_equal(image_io.as_rgb(eight[..., :channels], alpha=alpha), eight[..., picked])
            kept = image_io.as_rgb(rgba[..., :channels], alpha=alpha, keep_depth=True)
            assert kept.dtype == np.uint16
            np.testing.assert_array_equal(kept, rgba[..., picked])
    rgb8 = eight[..., :3].copy()
    assert image_io.as_rgb(rgb8).base is rgb8  # nothing to change: a view
    np.testing.assert_array_equal(image_io.as_rgb(eight[..., 0]), eight[..., [0, 0, 0]])  # gray without a channel axis
    with pytest.raises(ValueError, match=r'pixels must be \[H, W, C\] or gray \[H, W\], got shape \(6,\)'):
        image_io.as_rgb(eight[0, :, 0])


def test_icc_profile_of_a_16bit_tiff_is_kept(tmp_path, tiny_model):
    deep = (np.random.default_rng(1).random((12, 16, 3)) * 65535).astype(np.uint16)
    (tmp_path / 'in').mkdir()
    (tmp_path / 'in' / 'deep.tif').write_bytes(image_io.encode_image(image_io.Picture(deep, SRGB), 'tif'))
    assert Image.open(tmp_path / 'in' / 'deep.tif').info['icc_profile'] == SRGB  # PIL reads what we wrote
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'in' / 'deep.tif'), cv2.IMREAD_UNCHANGED)[..., ::-1], deep)
    assert run_cli('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-s', 2, model=tiny_model) == 0
    out = image_io.read_image(tmp_path / 'out' / 'deep_out.tif')
    assert out.pixels.dtype == np.uint16 and out.pixels.shape == (24, 32, 3) and out.icc_profile == SRGB


UPRIGHT_BY_HAND = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
                   5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
                   7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}  # EXIF 1-8


def with_exif_chunk(png, orientation):
    """PNG bytes with an eXIf chunk holding the EXIF orientation, right after IHDR (which ends at byte 33)."""
    exif = Image.Exif()
    exif[image_io.ORIENTATION_TAG] = orientation
    body = b'eXIf' + exif.tobytes().removeprefix(b'Exif\0\0')
    return png[:33] + struct.pack('>I', len(body) - 4) + body + struct.pack('>I', zlib.crc32(body)) + png[33:]


@pytest.mark.parametrize('orientation', range(1, 9))
def test_every_format_comes_out_upright_once(tmp_path, monkeypatch, orientation):
    """01-tiff-orientation: the decoders already turn TIFFs upright, which image_io did again (21 of 24 TIFFs came
    out mirrored or turned). Orientation 1-8 in 8-bit, 16-bit and gray TIFF (PIL and OpenCV), JPEG, 8-bit, 16-bit
    and gray PNG: the pixels and the header's size are the upright picture."""
    (tmp_path / 'in').mkdir()  # the case's make.py writes into it
    src = make_case('turn3/01-tiff-orientation', tmp_path, monkeypatch)
    stored = np.load(tmp_path / 'stored.npy')  # 24 x 32 RGB, a gradient along both axes
    gray = ((stored[..., 0].astype(np.uint16) + stored[..., 1]) // 2 * 257)[..., None]
    exif = Image.Exif()
    exif[image_io.ORIENTATION_TAG] = orientation
    Image.fromarray(stored).save(src / 'rgb8.jpg', exif=exif, quality=100, subsampling=0)
    Image.fromarray(stored).save(src / 'rgb8.png', exif=exif)
    Image.fromarray(gray[..., 0]).save(src / 'gray16.png', exif=exif)
    rgb16 = stored.astype(np.uint16) * 257
    (src / 'rgb16.png').write_bytes(with_exif_chunk(cv2.imencode('.png', rgb16[..., ::-1])[1].tobytes(), orientation))
    files = {f'rgb8_o{orientation}.tif': stored, f'rgb16_o{orientation}.tif': rgb16,
             f'gray16_o{orientation}.tif': gray, 'rgb8.jpg': stored, 'rgb8.png': stored, 'rgb16.png': rgb16,
             'gray16.png': gray}
    for name, raster in files.items():
        pixels, upright = image_io.read_image(src / name).pixels, UPRIGHT_BY_HAND[orientation](raster)
        info = image_io.probe_image(src / name)
        assert pixels.shape == upright.shape and (info.height, info.width) == upright.shape[:2], name
        error = np.abs(pixels.astype(float) - upright).max() / (257 if pixels.dtype == np.uint16 else 1)
        assert error <= (4 if name.endswith('.jpg') else 0), f'{name}: {error} levels from the upright picture'


def test_floating_point_tiffs_are_refused_saying_so(tmp_path, tiny_model, capsys):
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'rgb_float.tif'), np.random.default_rng(0).random((6, 7, 3), np.float32))
    Image.fromarray(np.random.default_rng(0).random((6, 7), np.float32)).save(tmp_path / 'in' / 'gray_float.tif')
    for name in ('rgb_float.tif', 'gray_float.tif'):
        with pytest.raises(image_io.ImageReadError, match='32-bit floating-point TIFF: not supported'):
            image_io.probe_image(tmp_path / 'in' / name)
    assert run_cli('-i', tmp_path / 'in', '-o', tmp_path / 'out', '-s', 2, model=tiny_model) == 1
    lines = failures(capsys.readouterr().err)
    assert len(lines) == 2 and all('floating-point TIFF: not supported; convert it to 16-bit' in f for f in lines)


# 6. Memory from the header

MEASURED_CLI = textwrap.dedent('''
    import resource, subprocess, sys
    result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    print(result.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
    print(result.stderr)
''')


def test_header_bomb_is_refused_within_the_budget(tmp_path, tiny_model, monkeypatch):
    """header_bomb: a 200-byte PNG that declares 9400x9400 is refused from its header; the whole CLI process stays
    under --max-memory 1GB (before: 3.1 GB, decoding and converting it before checking anything)."""
    src = make_case('header_bomb', tmp_path / 'case', monkeypatch)
    info = image_io.probe_image(src / 'declares_9400x9400.png')
    assert (info.width, info.height, info.channels, info.itemsize) == (9400, 9400, 3, 1)
    assert info.decode_bytes > 9400 * 9400 * 3
    script = os.path.join(ROOT, 'inference', 'inference_ciaosr.py')
    command = [sys.executable, '-c', MEASURED_CLI, sys.executable, script, '-i', str(src), '-o', str(tmp_path / 'out'),
               '-s', '4', '--max-memory', '1GB', '--model', str(tiny_model)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    status, peak = map(int, result.stdout.splitlines()[0].split())
    assert status == 1
    assert 'declares_9400x9400.png: 9400x9400: decoding it does not fit in --max-memory 1 GiB (needs ' in result.stdout
    assert peak < 2 ** 30, f'peak RSS {peak / 2 ** 30:.2f} GiB'
    assert list((tmp_path / 'out').iterdir()) == []


MEASURED_READ = textwrap.dedent('''
    import sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from ciaosr import image_io

    def resident():
        with open('/proc/self/statm') as statm:
            return int(statm.read().split()[1]) * 4096

    info = image_io.probe_image(sys.argv[2])
    before, peak, done = resident(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            time.sleep(0.0002)
    sampler = threading.Thread(target=sample)
    sampler.start()
    picture = image_io.read_image(sys.argv[2])
    done.set()
    sampler.join()
    print(peak[0] - before, info.decode_bytes, picture.pixels.nbytes == info.pixel_bytes)
''')


@pytest.mark.skipif(not os.path.exists('/proc/self/statm'), reason='samples the resident set from /proc')
@pytest.mark.parametrize('kind', ['rgb.png', 'palette.png', 'rgba.png', 'rgb16.png', 'gray.jpg', 'rotated.jpg'])
def test_decoding_stays_within_the_header_estimate(tmp_path, kind):
    """`ImageInfo.decode_bytes` (from the header) bounds the memory `read_image` takes: the resident set sampled
    while it decodes a 2000x3000 image, in a fresh process each."""
    h, w = 2000, 3000
    yy, xx = np.mgrid[:h, :w]
    rgb = np.dstack([xx % 251, yy % 241, (xx + yy) % 239]).astype(np.uint8)
    path = tmp_path / kind
    if kind == 'rgb16.png':
        cv2.imwrite(str(path), rgb.astype(np.uint16) * 257)
    elif kind == 'rotated.jpg':
        image = Image.fromarray(rgb)
        exif = image.getexif()
        exif[image_io.ORIENTATION_TAG] = 6
        image.save(path, exif=exif)
    else:
        image = Image.fromarray(rgb[..., 0] if kind == 'gray.jpg' else rgb)
        {'palette.png': lambda im: im.convert('P'), 'rgba.png': lambda im: im.convert('RGBA')}.get(
            kind, lambda im: im)(image).save(path)
    result = subprocess.run([sys.executable, '-c', MEASURED_READ, ROOT, str(path)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    used, estimate, sizes_agree = result.stdout.split()
    assert sizes_agree == 'True', result.stderr
    assert int(used) <= int(estimate), f'{kind}: read_image took {int(used) / 2 ** 20:.0f} MiB, ' \
                                       f'estimated {int(estimate) / 2 ** 20:.0f} MiB'


# 7. Finite output only

@pytest.fixture
def overflowing_model(tiny_model, tmp_path):
    """The tiny model with its decoder's weights times 1e30: finite weights (the loader accepts them) whose
    outputs overflow to +-inf."""
    net = load_model(tiny_model)
    with torch.no_grad():
        for layer in net.imnet_q.layers[::2]:
            layer.weight.mul_(1e30)
    path = tmp_path / 'overflow.safetensors'
    save_safetensors(net, path, net.arch)
    return path


def test_non_finite_output_is_never_written(tmp_path, tiny_model, overflowing_model, capsys, monkeypatch):
    """Outputs that overflow (clamping would have made them 0 or 1) and NaN weights: the file fails, nothing is
    written."""
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / 'a.png')
    lr = torch.rand(1, 3, 8, 8)
    assert torch.isnan(super_resolve(load_model(overflowing_model), lr, 2)).any()
    assert run_cli('-i', tmp_path / 'a.png', '-o', tmp_path / 'out', '-s', 2, model=overflowing_model) == 1

    def nan_weights(*args, **kwargs):  # the loader refuses NaN weights in a file, so they are set after loading
        net = load_model(tiny_model)
        with torch.no_grad():
            net.imnet_q.layers[0].weight[0, 0] = math.nan
        return net
    monkeypatch.setattr(cli, 'load_model', nan_weights)
    assert torch.isnan(super_resolve(nan_weights(), lr, 2)).all()
    # In PyTorch: OpenVINO's ReLU maps NaN to 0, so there NaN weights give finite (meaningless) output.
    assert run_cli('-i', tmp_path / 'a.png', '-o', tmp_path / 'out', '-s', 2, '--runtime', 'torch') == 1
    lines = failures(capsys.readouterr().err)
    assert len(lines) == 2 and all('the network produced NaN or infinite values, so nothing was written' in line
                                   for line in lines)
    assert list((tmp_path / 'out').iterdir()) == []


def test_benchmark_metrics_that_cannot_be_computed_are_null(tmp_path, shared_data, overflowing_model):
    """Non-finite model output, and PSNR infinite on a flat image: null with the reason, and the JSON stays valid."""
    folder = tmp_path / 'data' / 'Mixed'
    folder.mkdir(parents=True)
    Image.open(shared_data / 'Set5' / 'baby.png').crop((100, 100, 160, 148)).save(folder / 'baby.png')
    records = benchmark.run(['--model', str(overflowing_model), '--name', 'Broken', '--data-root',
                              str(tmp_path / 'data'), '--datasets', 'Mixed', '--scales', '2',
                              '--json', str(tmp_path / 'a.json'), '--markdown', str(tmp_path / 'a.md')])
    bicubic, broken = records
    assert 20 < bicubic['psnr'] < 60 and 'psnr_unavailable' not in bicubic
    assert broken['psnr'] is None and broken['ssim'] is None
    assert broken['psnr_unavailable'] == 'the model output is not finite for baby.png'
    assert strict_json((tmp_path / 'a.json').read_text()) == records
    assert 'PSNR unavailable (Broken Mixed x2): the model output is not finite for baby.png' in (
        tmp_path / 'a.md').read_text()

    Image.fromarray(np.full((40, 40), 77, np.uint8)).save(folder / 'flat.png')
    records = benchmark.run(['--model', 'bicubic', '--data-root', str(tmp_path / 'data'), '--datasets', 'Mixed',
                              '--scales', '2', '--json', str(tmp_path / 'b.json')])
    assert records[0]['psnr'] is None and records[0]['psnr_unavailable'] == 'SR equals HR (infinite PSNR) for flat.png'
    assert records[0]['ssim'] is not None and records[0]['n_images'] == 2
    assert strict_json((tmp_path / 'b.json').read_text()) == records


# 8. Folders

def test_output_folder_problems_stop_before_any_work(tmp_path, tiny_model, capsys, monkeypatch):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'a.png')
    (tmp_path / 'taken').write_text('a file, not a folder')

    def no_work(*args, **kwargs):
        raise AssertionError('the model was loaded although the output folder is unusable')
    monkeypatch.setattr(cli, 'load_model', no_work)
    taken, inside = tmp_path / 'taken', tmp_path / 'taken' / 'sub'
    for out, message in ((taken, f'the output folder {taken} exists and is not a folder'),
                         (inside, f'cannot write to the output folder {inside}')):
        assert run_cli('-i', tmp_path / 'a.png', '-o', out, '-s', 2, model=tiny_model) == 1  # an output: 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f'error: {message}')


@pytest.mark.skipif(os.name != 'posix' or os.geteuid() == 0, reason='permissions do not bind root')
def test_unwritable_output_folder_is_refused(tmp_path, tiny_model, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'a.png')
    (tmp_path / 'locked').mkdir(mode=0o555)
    assert run_cli('-i', tmp_path / 'a.png', '-o', tmp_path / 'locked', '-s', 2, model=tiny_model) == 1
    assert f'cannot write to the output folder {tmp_path / "locked"}' in capsys.readouterr().err


def test_output_into_the_input_folder_twice_skips_everything(tmp_path, tiny_model, capsys):
    (tmp_path / 'sub').mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'a.png')
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / 'sub' / 'b.jpg')
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / 'keep_out.bmp')  # not a format we write: an input
    argv = ('-i', tmp_path, '-o', tmp_path, '-s', 2, '--recursive', '--skip-existing')
    assert run_cli(*argv, model=tiny_model) == 0
    assert '3 done, 0 skipped, 0 failed' in capsys.readouterr().out
    assert run_cli(*argv, model=tiny_model) == 0
    out = capsys.readouterr().out
    assert '0 done, 3 skipped, 0 failed' in out and 'not taken as inputs: 3 earlier output(s)' in out
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*.*')) == [
        'a.png', 'a_out.png', 'keep_out.bmp', 'keep_out_out.png', 'sub/b.jpg', 'sub/b_out.jpg']


def test_leftover_partial_files_are_removed_and_hidden_files_skipped(tmp_path, tiny_model, capsys):
    src, out = tmp_path / 'in', tmp_path / 'out'
    (src / '.hidden').mkdir(parents=True)
    out.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / 'a.png')
    (src / '._a.png').write_bytes(b'\0\5\26\7 AppleDouble resource fork')
    (src / '.DS_Store').write_bytes(b'\0\0\0\1Bud1')
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / '.hidden' / 'b.png')
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    leftover = out / f'.a_out.png.{int(dead.stdout)}-0000000f.part'  # its writer has ended
    leftover.write_bytes(b'half an image')
    live = out / f'.b_out.png.{os.getppid()}-0000000f.part'  # a run that is still writing (05-concurrent-runs)
    live.write_bytes(b'half of an image being written')
    not_ours = out / '.notes.part'
    not_ours.write_text('a hidden file of someone else')
    assert run_cli('-i', src, '-o', out, '-s', 2, '--recursive', model=tiny_model) == 0
    captured = capsys.readouterr()
    assert '1 done, 0 skipped, 0 failed' in captured.out and 'FAILED' not in captured.err
    assert f'removed 1 temporary file(s) left in {out} by an interrupted run' in captured.out
    assert sorted(p.name for p in out.iterdir()) == sorted(['.notes.part', live.name, 'a_out.png'])


def test_a_second_run_keeps_the_temporary_file_that_a_live_run_is_writing(tmp_path):
    """05-concurrent-runs-same-output: run B's start-up cleaning must not delete run A's file in flight."""
    out = tmp_path / 'out'
    out.mkdir()
    with atomic_file(out / 'a_out.png') as file:
        file.write(b'the first run\'s image')
        assert image_io.remove_partial_files(out) == []
    assert (out / 'a_out.png').read_bytes() == b'the first run\'s image'
    assert sorted(p.name for p in out.iterdir()) == ['a_out.png']


def test_list_images_is_the_one_lister(tmp_path):
    for name in ('b.PNG', 'a.jpg', 'sub/c.tif', 'sub/.d.png', '.e/f.png', '._g.jpg', 'notes.txt', 'h.webp.part'):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b'x')
    (tmp_path / 'folder.png').mkdir()
    assert image_io.list_images(tmp_path) == [tmp_path / 'a.jpg', tmp_path / 'b.PNG']
    assert image_io.list_images(tmp_path, recursive=True) == [tmp_path / 'a.jpg', tmp_path / 'b.PNG',
                                                               tmp_path / 'sub' / 'c.tif']
    with pytest.raises(FileNotFoundError):
        image_io.list_images(tmp_path / 'missing')
    with pytest.raises(NotADirectoryError):
        image_io.list_images(tmp_path / 'a.jpg')


def test_benchmark_names_and_skips_unreadable_and_too_small_images(tmp_path, shared_data, capsys):
    folder = tmp_path / 'data' / 'Odd'
    folder.mkdir(parents=True)
    crop = Image.open(shared_data / 'Set5' / 'bird.png').crop((0, 0, 64, 52))
    crop.save(folder / 'bird.png')
    (folder / '._bird.png').write_bytes(b'\0\5\26\7 AppleDouble')  # hidden: not listed at all
    full = (folder / 'bird.png').read_bytes()
    (folder / 'cut.png').write_bytes(full[:len(full) // 2])  # header fine, pixels missing
    (folder / 'empty.png').write_bytes(b'')
    Image.fromarray(np.zeros((1, 3, 3), np.uint8)).save(folder / 'tiny.png')
    crop.crop((0, 0, 30, 30)).save(folder / 'small.png')  # fine at x2, too small at x8
    records = benchmark.run(['--model', 'bicubic', '--data-root', str(tmp_path / 'data'), '--datasets', 'Odd',
                              '--scales', '2', '8', '--json', str(tmp_path / 'odd.json'),
                              '--markdown', str(tmp_path / 'odd.md')])
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    assert [(r['scale'], r['n_images']) for r in records] == [(2, 2), (8, 1)]
    assert all(r['psnr'] is not None and r['ssim'] is not None for r in records)
    report = (tmp_path / 'odd.md').read_text()
    for line in (f'{folder / "empty.png"}: empty file', f'{folder / "cut.png"}: damaged or truncated image',
                 f'{folder / "tiny.png"} at x2: 3x1 has an empty LR at x2',
                 f'{folder / "small.png"} at x8: 30x30 leaves 8 pixels per side after the 8-pixel shave'):
        assert f'left out: {line}' in err and f'Left out: {line}' in report
    assert strict_json((tmp_path / 'odd.json').read_text()) == records
