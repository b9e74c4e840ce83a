"""HEIC/HEIF, AVIF, JPEG XL, PSD and ICO (ciaosr/photo_formats.py, ciaosr/image_io.py), alone and in folders."""
import ast
import base64
import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms, features

from ciaosr import image_io, photo_formats
from ciaosr import upscale as cli

from .conftest import SHARED

CASE = SHARED / 'cases' / 'turn3' / '02-formats-silently-skipped' / 'make.py'
DISPLAY_P3 = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB', 5000)).tobytes()  # a profile that is not sRGB's
needs_avif = pytest.mark.skipif(not features.check('avif'), reason='this Pillow was built without AVIF')
needs_jxl = pytest.mark.skipif('pillow_jxl' not in photo_formats.registered(),
                               reason='pillow-jxl-plugin is not installed (extra `formats`)')
needs_heif = pytest.mark.skipif('pi_heif' not in photo_formats.registered(),
                                reason='pi-heif is not installed (extra `formats`)')


def phone_files():
    """{name: bytes} of the real HEIC/AVIF/JPEG XL stills and two H.264 clips embedded in the shared case."""
    if not CASE.is_file():
        pytest.skip(f'{CASE} is missing')
    tree = ast.parse(CASE.read_text())
    node = next(n.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == 'FILES')
    return {name: base64.b64decode(''.join(parts)) for name, parts in ast.literal_eval(node).items()}


def gradient(h, w, channels):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.dstack([(xx * 2 + yy * 2 + 40 * c) % 256 for c in range(channels)]).astype(np.uint8)


@needs_avif
def test_avif_round_trip_keeps_alpha_and_profile(tmp_path):
    rgba = gradient(24, 32, 4)
    path = tmp_path / 'a.avif'
    path.write_bytes(image_io.encode_image(image_io.Picture(rgba, DISPLAY_P3), 'avif'))
    info = image_io.probe_image(path)
    picture = image_io.read_image(path)
    assert (info.width, info.height, info.channels, info.itemsize) == (32, 24, 4, 1)
    assert picture.icc_profile == DISPLAY_P3 and picture.pixels.shape == (24, 32, 4)
    assert np.abs(picture.pixels.astype(int) - rgba).mean() < 3  # lossy, close
    deep = image_io.Picture(rgba[..., :3].astype(np.uint16) * 257)
    eight = Image.open(io.BytesIO(image_io.encode_image(deep, 'avif')))
    assert eight.mode == 'RGB'  # 16-bit pictures are rounded to 8 bits for AVIF


@needs_jxl
@pytest.mark.parametrize('pixels', [gradient(24, 32, 4), gradient(24, 32, 1)[..., 0].astype(np.uint16) * 257 + 5],
                         ids=['rgba', 'gray16'])
def test_jpeg_xl_is_read_losslessly_with_alpha_and_16_bits(tmp_path, pixels):
    path = tmp_path / 'a.jxl'
    Image.fromarray(pixels).save(path, lossless=True)
    picture = image_io.read_image(path)
    info = image_io.probe_image(path)
    expected = pixels if pixels.ndim == 3 else pixels[..., None]
    assert np.array_equal(picture.pixels, expected)
    assert (info.channels, info.itemsize) == (expected.shape[2], expected.dtype.itemsize)
    assert picture.icc_profile  # libjxl describes the colours with a profile: it is written back (PNG)


@needs_jxl
@pytest.mark.parametrize('size', [(40, 32), (17, 9), (256, 144), (1000, 1), (3, 2000), (640, 512)])
def test_jpeg_xl_size_comes_from_the_header(size):
    encoded = io.BytesIO()
    Image.fromarray(gradient(size[1], size[0], 3)).save(encoded, format='JXL', effort=1)
    assert photo_formats.jxl_size(encoded.getvalue()[:64]) == size
    assert photo_formats.jxl_size(b'\x89PNG\r\n\x1a\n') is None


@needs_jxl
def test_oversized_jpeg_xl_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / 'big.jxl'
    Image.fromarray(gradient(64, 64, 3)).save(path, effort=1)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
    monkeypatch.setattr(Image, 'open', lambda *a, **k: pytest.fail('decoded'))
    with pytest.raises(image_io.ImageReadError, match='too large: JPEG XL of 64x64'):
        image_io.probe_image(path)


@needs_heif
def test_iphone_heic_is_read(tmp_path):
    path = tmp_path / 'IMG_0001.HEIC'
    path.write_bytes(phone_files()['IMG_0001.HEIC'])
    info = image_io.probe_image(path)
    picture = image_io.read_image(path)
    assert (info.width, info.height, info.channels, info.itemsize) == (40, 32, 3, 1)
    assert picture.pixels.shape == (32, 40, 3) and picture.pixels.std() > 10  # a photo, not a blank


def test_missing_plugin_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(photo_formats, 'registered', frozenset)
    path = tmp_path / 'IMG_0001.HEIC'
    path.write_bytes(b'\0\0\0\x1cftypheic')
    with pytest.raises(image_io.ImageReadError, match=r'HEIC needs the `formats` extra: pip install "ciaosr\[formats'):
        image_io.probe_image(path)


@needs_heif
@needs_jxl
@needs_avif
def test_phone_folder_nothing_skipped_without_a_word(tmp_path, tiny_model, capsys):
    """Case 02: HEIC, AVIF, JPEG XL, PSD and ICO are upscaled in a folder like alone; another file gets a line."""
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    for name, data in phone_files().items():
        if not name.startswith('clip'):
            (src / name).write_bytes(data)
    Image.fromarray(gradient(24, 32, 3)).save(src / 'favicon.ico')
    planes = gradient(24, 32, 3).transpose(2, 0, 1).tobytes()  # PSD: RGB, 8-bit, no layers, raw planar pixels
    (src / 'poster.psd').write_bytes(b'8BPS' + struct.pack('>H6xHIIHH', 1, 3, 24, 32, 8, 3) + bytes(14) + planes)
    (src / 'notes.txt').write_text('not a photo')
    assert cli.main(['-i', str(src), '-o', str(out), '-s', '2', '--model', str(tiny_model)]) == 0
    captured = capsys.readouterr()
    assert '5 done, 0 skipped, 0 failed, 1 ignored' in captured.out
    assert 'notes.txt: not an image or video this tool reads (.txt)' in captured.out
    assert sorted(p.name for p in out.iterdir()) == ['IMG_0001_out.png', 'IMG_0002_out.avif', 'IMG_0003_out.png',
                                                      'favicon_out.png', 'poster_out.png']
    heic = image_io.read_image(out / 'IMG_0001_out.png')
    assert heic.pixels.shape == (64, 80, 3)
