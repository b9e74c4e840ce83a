"""Reading and writing the images people have: 8/16-bit, gray, alpha, palette, CMYK, EXIF-rotated, ICC-tagged.

Pixels are numpy arrays [H, W, C] of uint8 or uint16 with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or
4 (RGBA), already turned upright by the EXIF orientation. PIL reads everything except 16-bit colour
PNG/TIFF, which it reduces to 8 bits: those pixels come from OpenCV. Files are written whole or not at
all: encoded in memory, written to a temporary file beside the target, then renamed over it.
"""
import io
import os
import secrets
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.bmp', '.gif')
FORMATS = {'png': 'PNG', 'jpg': 'JPEG', 'jpeg': 'JPEG', 'webp': 'WEBP', 'tif': 'TIFF', 'tiff': 'TIFF'}  # we write
SAVE_OPTIONS = {'PNG': {}, 'JPEG': {'quality': 95}, 'WEBP': {'quality': 95}, 'TIFF': {'compression': 'tiff_deflate'}}
ORIENTATION_TAG = 0x0112
# EXIF orientation -> the array operation that makes the image upright (as PIL.ImageOps.exif_transpose).
UPRIGHT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}
ALPHA_MODES = ('LA', 'La', 'PA', 'RGBA', 'RGBa')


class ImageReadError(ValueError):
    """A file that is not a readable image; the message says why in one line."""


@dataclass
class Picture:
    """Upright pixels [H, W, C] (uint8 or uint16) and the ICC profile to write back (or None)."""
    pixels: np.ndarray
    icc_profile: bytes | None = None

    @property
    def has_alpha(self):
        return self.pixels.shape[2] in (2, 4)

    @property
    def is_gray(self):
        return self.pixels.shape[2] in (1, 2)


def has_alpha(image):
    """Whether a PIL image (opened, not necessarily decoded) carries transparency."""
    return image.mode in ALPHA_MODES or (image.mode in ('P', 'L', 'RGB') and 'transparency' in image.info)


def open_checked(source):
    """PIL image of a path or bytes, header read only; ImageReadError if empty, not an image or absurdly large.

    Images over PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, about 89 megapixels) are refused.
    """
    try:
        if not (source if isinstance(source, bytes) else os.path.getsize(source)):
            raise ImageReadError('empty file (0 bytes)')
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageReadError(f'too large: {err}') from None
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError('not a readable image (unknown or broken format)') from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f'not a readable image ({err})') from None


def read_image(path):
    """Picture of the image file at `path`; ImageReadError (one line) for anything unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageReadError(f'cannot read the file ({err.strerror})') from None
    with open_checked(data) as image:
        icc = image.info.get('icc_profile') or None
        try:
            orientation = image.getexif().get(ORIENTATION_TAG, 1)
            if _is_16bit_colour(image, data):
                pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                if pixels is None:
                    raise ImageReadError('OpenCV cannot decode this 16-bit image')
                pixels = pixels[..., [2, 1, 0, 3][:pixels.shape[2]]]  # BGR(A) -> RGB(A)
            else:
                image.load()
                pixels, icc = _pil_pixels(image, icc)
        except ImageReadError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as err:
            raise ImageReadError(f'damaged or truncated image ({err})') from None
    return Picture(np.ascontiguousarray(UPRIGHT.get(orientation, lambda a: a)(pixels)), icc)


def _is_16bit_colour(image, data):
    """16-bit RGB, RGBA or gray + alpha PNG/TIFF, which PIL would decode to 8 bits (16-bit gray it keeps)."""
    if image.mode not in ('RGB', 'RGBA', 'LA'):
        return False
    if image.format == 'PNG':
        return data[24] == 16  # IHDR bit depth
    return image.format == 'TIFF' and 16 in image.tag_v2.get(258, ())  # BitsPerSample


def _pil_pixels(image, icc):
    """[H, W, C] array of a decoded PIL image, and the ICC profile that still applies to it."""
    if image.mode.startswith('I;16'):
        return np.asarray(image).astype(np.uint16)[..., None], icc
    if image.mode == 'I':  # 32-bit integer gray: kept as 16-bit
        return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)[..., None], icc
    if image.mode == 'F':
        raise ImageReadError('32-bit floating-point images are not supported')
    if image.mode == 'CMYK':
        return np.asarray(_cmyk_to_srgb(image, icc)), None
    if image.mode in ('1', 'L', 'LA', 'La'):
        target = 'LA' if has_alpha(image) else 'L'
    else:
        target = 'RGBA' if has_alpha(image) else 'RGB'
    pixels = np.asarray(image.convert(target))
    return (pixels[..., None] if pixels.ndim == 2 else pixels), icc


def _cmyk_to_srgb(image, icc):
    """RGB image of a CMYK one, through its ICC profile when it has a usable one."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile('sRGB'), outputMode='RGB')
        except ImageCms.PyCMSError:
            pass
    return image.convert('RGB')


def encode_image(picture, ext):
    """Bytes of `picture` as a file of type `ext` (a key of FORMATS), with its ICC profile.

    JPEG and WebP hold 8 bits (16-bit pixels are rounded to 8) and no gray + alpha; WebP has no gray either
    (PIL writes it as RGB). 16-bit colour is written by OpenCV, PNG with an iCCP chunk added by hand,
    TIFF without the profile (OpenCV cannot write one).
    """
    pixels, fmt = picture.pixels, FORMATS[ext]
    if pixels.dtype == np.uint16 and fmt in ('JPEG', 'WEBP'):
        pixels = np.round(pixels / 257).astype(np.uint8)
    if pixels.dtype == np.uint16 and pixels.shape[2] > 1:
        if pixels.shape[2] == 2:  # 16-bit gray + alpha: neither library writes it, so as RGBA
            pixels = pixels[..., [0, 0, 0, 1]]
        ok, encoded = cv2.imencode('.' + ext, pixels[..., [2, 1, 0, 3][:pixels.shape[2]]])
        if not ok:
            raise ValueError(f'OpenCV could not encode a 16-bit {ext} image')
        return _png_with_icc(encoded.tobytes(), picture.icc_profile) if fmt == 'PNG' else encoded.tobytes()
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)  # L, I;16, LA, RGB or RGBA
    buffer = io.BytesIO()
    icc = {'icc_profile': picture.icc_profile} if picture.icc_profile else {}
    image.save(buffer, format=fmt, **SAVE_OPTIONS[fmt], **icc)
    return buffer.getvalue()


def _png_with_icc(png, icc):
    """PNG bytes with an iCCP chunk (the profile, zlib-compressed) inserted after IHDR, which ends at byte 33."""
    if not icc:
        return png
    body = b'iCCP' + b'ICC profile\0\0' + zlib.compress(icc)
    chunk = struct.pack('>I', len(body) - 4) + body + struct.pack('>I', zlib.crc32(body))
    return png[:33] + chunk + png[33:]


def write_atomic(path, data):
    """Write bytes to `path` all at once: a hidden temporary file in the same folder, fsync, rename.

    An interruption leaves either the old file or the complete new one, never a truncated image; the
    temporary file is removed on any exception (a SIGKILL can leave a `.NAME.*.part` file behind).
    """
    path = Path(path)
    temporary = path.with_name(f'.{path.name}.{secrets.token_hex(4)}.part')
    try:
        with open(temporary, 'xb') as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
