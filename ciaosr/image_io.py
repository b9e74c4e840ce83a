"""Reading and writing the images people have: 8/16-bit, gray, alpha, palette, CMYK, EXIF-rotated, ICC-tagged.

Pixels are numpy arrays [H, W, C] of uint8 or uint16 with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or
4 (RGBA), already turned upright by the EXIF orientation. PIL reads everything except 16-bit colour
PNG/TIFF, which it reduces to 8 bits: those pixels come from OpenCV. What a file holds is known from its
header before any pixel is decoded (`probe_image`), so callers can check sizes and memory first; animations,
multi-page files and floating-point samples are refused there. Files are written whole or not at all:
encoded in memory, written to a hidden temporary file beside the target, then renamed over it.
"""
import io
import os
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms, TiffImagePlugin, UnidentifiedImageError

from ciaosr_arch.files import atomic_file, is_abandoned

from . import photo_formats

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.bmp', '.gif', *photo_formats.SUFFIXES)
FORMATS = {'png': 'PNG', 'jpg': 'JPEG', 'jpeg': 'JPEG', 'webp': 'WEBP', 'tif': 'TIFF', 'tiff': 'TIFF',
           'avif': 'AVIF'}  # we write
MAX_SIDE = {'JPEG': 65535, 'WEBP': 16383}  # the longest side in pixels that these formats can hold
SAVE_OPTIONS = {'PNG': {}, 'JPEG': {'quality': 95}, 'WEBP': {'quality': 95}, 'TIFF': {'compression': 'tiff_deflate'},
                'AVIF': {'quality': 90}}
EIGHT_BIT_FORMATS = ('JPEG', 'WEBP', 'AVIF')  # 16-bit pixels are rounded to 8 bits for these
ORIENTATION_TAG = 0x0112
EXIF_IFD, PIXEL_X_TAG, PIXEL_Y_TAG = 0x8769, 0xA002, 0xA003  # the Exif sub-directory and its image size tags
MAX_EXIF_BYTES = 65533  # the EXIF block that a JPEG APP1 segment holds, its 'Exif\0\0' header included (Pillow's)
# EXIF orientation -> the array operation that makes the image upright (as PIL.ImageOps.exif_transpose).
UPRIGHT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}
ALPHA_MODES = ('LA', 'La', 'PA', 'RGBA', 'RGBa')
ANIMATION_FORMATS = ('GIF', 'PNG', 'WEBP')  # several frames in these are an animation; in TIFF, pages
BAND_BYTES = 8 * 2 ** 20  # decoded pixels are converted to the array in bands of about this size
SAMPLE_FORMAT_TAG, BITS_PER_SAMPLE_TAG, ICC_PROFILE_TAG = 339, 258, 34675  # TIFF tags
TIFF_UNDEFINED = 7  # TIFF field type of opaque bytes (the ICC profile)


class ImageReadError(ValueError):
    """A file that is not a readable image; the message says why in one line."""


@dataclass
class Picture:
    """Upright pixels [H, W, C] (uint8 or uint16), and the ICC profile and EXIF block (`exif_block`) to write back
    (or None)."""
    pixels: np.ndarray
    icc_profile: bytes | None = None
    exif: bytes | None = None

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] in (2, 4)

    @property
    def is_gray(self) -> bool:
        return self.pixels.shape[2] in (1, 2)


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header says, before any pixel is decoded (see `probe_image`).

    width, height: the upright size in pixels (EXIF orientation applied), as `read_image` returns it;
    channels: C of `read_image`'s array (1-4); itemsize: bytes per sample (1: 8-bit, 2: 16-bit);
    file_bytes: the file's size; upright_copy: whether turning it upright (decoder or `read_image`) costs a copy.
    """
    width: int
    height: int
    channels: int
    itemsize: int
    file_bytes: int
    upright_copy: bool = False

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)

    @property
    def pixel_bytes(self) -> int:
        """Bytes of `read_image`'s array: height * width * channels * itemsize."""
        return self.height * self.width * self.channels * self.itemsize

    @property
    def decode_bytes(self) -> int:
        """Peak memory of `read_image` in bytes (an upper bound): the file, the decoder's buffer (PIL keeps up to
        4 bytes per 8-bit pixel, OpenCV C samples; twice if turned upright by a copy, by the decoder or by us: that
        copy is never larger), the array, a band and its copies."""
        decoder = self.height * self.width * max(4, self.channels) * self.itemsize
        return self.file_bytes + decoder * (2 if self.upright_copy else 1) + self.pixel_bytes + 4 * BAND_BYTES


def has_alpha(image: Image.Image) -> bool:
    """Whether a PIL image (opened, not necessarily decoded) carries transparency."""
    return image.mode in ALPHA_MODES or (image.mode in ('P', 'L', 'RGB') and 'transparency' in image.info)


def open_checked(source: str | Path | bytes) -> Image.Image:
    """PIL image of a path or bytes, header read only; ImageReadError if empty, not an image or absurdly large.

    Images over PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, about 89 megapixels) are refused; a
    JPEG XL file (whose plugin decodes it when it is opened) from its header, before it is decoded. A path whose
    format needs a plugin that is not installed (`photo_formats.missing_reader`) is refused with the extra to
    install.
    """
    try:
        if not isinstance(source, bytes) and (problem := photo_formats.missing_reader(Path(source).suffix)):
            raise ImageReadError(problem)
        if not (source if isinstance(source, bytes) else os.path.getsize(source)):
            raise ImageReadError('empty file (0 bytes)')
        photo_formats.registered()
        _check_jxl_size(source)
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageReadError(f'too large: {err}') from None
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        bits = _tiff_float_bits(source)
        raise ImageReadError(_float_message(bits, 'TIFF') if bits else
                             'not a readable image (unknown or broken format)') from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f'not a readable image ({err})') from None


def _check_jxl_size(source):
    """ImageReadError if `source` (path or bytes) is a JPEG XL file whose header declares more than
    Image.MAX_IMAGE_PIXELS pixels."""
    if isinstance(source, bytes):
        head = source[:4096]
    else:
        with open(source, 'rb') as file:
            head = file.read(4096)
    size = photo_formats.jxl_size(head)
    if size and Image.MAX_IMAGE_PIXELS and size[0] * size[1] > Image.MAX_IMAGE_PIXELS:
        raise ImageReadError(f'too large: JPEG XL of {size[0]}x{size[1]} pixels is over the limit of '
                             f'{Image.MAX_IMAGE_PIXELS} pixels')


def probe_image(path: str | Path) -> ImageInfo:
    """ImageInfo of the image file at `path`, from its header alone: no pixel is decoded.

    Raises ImageReadError (one line) for every file that `read_image` refuses before decoding: missing or empty,
    not an image, over PIL's decompression-bomb limit, animated (GIF, APNG, WebP) or multi-page (TIFF),
    floating-point samples. A file that passes can still turn out damaged when `read_image` decodes it.
    """
    with open_checked(path) as image:
        return _header_info(image, os.path.getsize(path))


def written_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file this tool wrote (upright: it writes orientation 1), from its header and without PIL's
    decompression-bomb limit, which guards against files from elsewhere: an output that the memory plan allowed may
    be larger (a 12 MP photo at x4: 192 MP). ImageReadError (one line) if it is not a readable image. Not
    thread-safe: the limit is PIL's global (Image.MAX_IMAGE_PIXELS), lifted while the header is read."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with open_checked(path) as image:
            return image.height, image.width
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_image(path: str | Path) -> Picture:
    """Picture of the image file at `path`: pixels [H, W, C] uint8 or uint16, upright, its ICC profile and its EXIF
    block (`exif_block`).

    C is 1 (gray, also 1-bit and 16/32-bit integer gray), 2 (gray + alpha: also gray with a transparent value), 3
    (RGB: also palette, CMYK through its ICC profile, other colour modes) or 4 (RGBA: also palette or RGB with a
    transparent colour, 8- or 16-bit).
    16-bit samples stay uint16 (32-bit integer gray is clipped to 16 bits; 10/12-bit HEIF is scaled to 16).
    Memory: at most `probe_image(path).decode_bytes`. Raises ImageReadError (one line) for anything unreadable
    or refused (see `probe_image`), damaged or truncated.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageReadError(f'cannot read the file ({err.strerror})') from None
    if problem := photo_formats.missing_reader(Path(path).suffix):
        raise ImageReadError(problem)
    with open_checked(data) as image:
        _header_info(image, len(data))
        icc = image.info.get('icc_profile') or None
        exif = exif_block(image)
        orientation, ours = _orientation(image)
        try:
            if _is_deep_heif(image):
                pixels = photo_formats.heif_pixels(data)
            elif _is_16bit_colour(image):
                pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
                if pixels is None:
                    raise ImageReadError('OpenCV cannot decode this 16-bit image')
                pixels = pixels[..., None] if pixels.ndim == 2 else pixels
                if pixels.shape[2] in (3, 4):  # BGR(A) -> RGB(A), in place
                    cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB if pixels.shape[2] == 3 else cv2.COLOR_BGRA2RGBA, pixels)
            else:
                image.load()
                pixels, icc = _pil_pixels(image, icc)
        except ImageReadError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, struct.error, MemoryError) as err:
            raise ImageReadError(f'damaged or truncated image ({err})') from None
    if ours and orientation in UPRIGHT:
        pixels = np.ascontiguousarray(UPRIGHT[orientation](pixels))
    return Picture(pixels, icc, exif)


def exif_block(image) -> bytes | None:
    """The EXIF block of an opened image (PIL), to be written back with its upscaled pixels: camera, lens, exposure,
    date, GPS and the rest, with the orientation set to 1 (upright, as `read_image` returns the pixels). None when
    there is none, for a TIFF (whose tags describe its own layout), and for one that PIL cannot parse or that is
    over MAX_EXIF_BYTES: the picture is read without it rather than refused."""
    raw = image.info.get('exif')
    if not raw or image.format == 'TIFF':
        return None
    exif = Image.Exif()
    try:
        exif.load(raw)
        if ORIENTATION_TAG in exif:
            exif[ORIENTATION_TAG] = 1
        block = exif.tobytes()
    except Exception:  # noqa: BLE001  (whatever PIL cannot parse or write back: the block is dropped, not the picture)
        return None
    return block if len(block) <= MAX_EXIF_BYTES else None


def _exif_of_size(block: bytes | None, width: int, height: int) -> bytes | None:
    """An EXIF block (`exif_block`) whose image size tags, where it has them, say width x height; None for None, or
    if PIL cannot write it back (the picture is written without it)."""
    if block is None:
        return None
    exif = Image.Exif()
    try:
        exif.load(block)
        sizes = exif.get_ifd(EXIF_IFD)
        if PIXEL_X_TAG in sizes or PIXEL_Y_TAG in sizes:
            sizes[PIXEL_X_TAG], sizes[PIXEL_Y_TAG] = width, height
        return exif.tobytes()
    except Exception:  # noqa: BLE001  (as in exif_block: never lose the upscaled picture for its metadata)
        return None


def _header_info(image, file_bytes):
    """ImageInfo of an opened PIL image; ImageReadError for animations, multi-page files and float samples."""
    try:
        frames = image.n_frames if getattr(image, 'is_animated', False) else 1
        orientation, ours = _orientation(image)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        raise ImageReadError(f'damaged image header ({err})') from None
    if frames > 1 and image.format != 'MPO':  # MPO: a JPEG with extra views; its first frame is the photo
        if image.format in ANIMATION_FORMATS:
            raise ImageReadError(f'animated {image.format} ({frames} frames): animations are not supported; '
                                 'extract the frames first')
        raise ImageReadError(f'multi-page {image.format} ({frames} pages): only single images are supported; '
                             'split the pages first')
    if image.mode == 'F' or (image.format == 'TIFF' and 3 in image.tag_v2.get(SAMPLE_FORMAT_TAG, ())):
        bits = image.tag_v2.get(BITS_PER_SAMPLE_TAG, (32,))[0] if image.format == 'TIFF' else 32
        raise ImageReadError(_float_message(bits, image.format))
    if _is_16bit_colour(image) or _is_deep_heif(image):  # (OpenCV reads a transparent colour, tRNS, as alpha)
        channels, itemsize = (4 if image.mode in ('RGBA', 'LA') or has_alpha(image) else 3), 2
    elif image.mode.startswith('I'):
        channels, itemsize = (2 if 'transparency' in image.info else 1), 2
    else:
        channels, itemsize = (3, 1) if image.mode == 'CMYK' else (len(_target_mode(image)), 1)
    width, height = image.size
    if ours and orientation in (5, 6, 7, 8):
        width, height = height, width
    return ImageInfo(width, height, channels, itemsize, file_bytes, upright_copy=orientation in UPRIGHT)


def _orientation(image):
    """(orientation, ours) of an opened image, from its header: the EXIF orientation (1-8) and whether `read_image`
    turns the decoded pixels upright itself (`UPRIGHT`). The one place that decides it for every format: PIL and
    OpenCV turn a TIFF upright while decoding it (and PIL's size of a TIFF is already the upright one), so ours is
    False for TIFF and True for the others. For a PNG the orientation comes from an eXIf chunk before the pixels
    (PIL's getexif() would decode the whole image to look for one after them)."""
    if image.format == 'TIFF':
        return image.tag_v2.get(ORIENTATION_TAG, 1), False
    if image.format != 'PNG':
        return image.getexif().get(ORIENTATION_TAG, 1), True
    exif = Image.Exif()
    if 'exif' in image.info:
        exif.load(image.info['exif'])
    return exif.get(ORIENTATION_TAG, 1), True


def _float_message(bits, fmt):
    return f'{bits}-bit floating-point {fmt}: not supported; convert it to 16-bit integers first'


def _tiff_float_bits(source):
    """Bits per sample of a TIFF (path or bytes) whose first image has floating-point samples, else None."""
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open(source, 'rb') as stream:
            header = stream.read(8)
            if header[:4] not in TiffImagePlugin.PREFIXES[:2]:  # classic TIFF, either byte order
                return None
            directory = TiffImagePlugin.ImageFileDirectory_v2(header)
            stream.seek(directory.next)
            directory.load(stream)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):
        return None
    if 3 not in directory.get(SAMPLE_FORMAT_TAG, ()):
        return None
    return directory.get(BITS_PER_SAMPLE_TAG, (32,))[0]


def _is_16bit_colour(image):
    """16-bit RGB, RGBA or gray + alpha PNG/TIFF, which PIL would decode to 8 bits (16-bit gray it keeps)."""
    if image.mode not in ('RGB', 'RGBA', 'LA'):
        return False
    if image.format == 'PNG':
        return bool(image.tile) and str(image.tile[0].args).endswith(';16B')  # the raw mode of IHDR depth 16
    return image.format == 'TIFF' and 16 in image.tag_v2.get(BITS_PER_SAMPLE_TAG, ())


def _is_deep_heif(image):
    """A HEIF image with more than 8 bits per sample (pi-heif's Pillow plugin would reduce it to 8 bits)."""
    return image.format == 'HEIF' and image.mode in ('RGB', 'RGBA') and image.info.get('bit_depth', 8) > 8


def _target_mode(image):
    """The PIL mode an 8-bit image is converted to: L, LA, RGB or RGBA."""
    if image.mode in ('1', 'L', 'LA', 'La'):
        return 'LA' if has_alpha(image) else 'L'
    return 'RGBA' if has_alpha(image) else 'RGB'


def _pil_pixels(image, icc):
    """[H, W, C] array of a decoded PIL image, and the ICC profile that still applies to it.

    Converted in bands of about BAND_BYTES, so that only the decoded image, the array and one band are in memory.
    """
    if image.mode.startswith('I'):  # 16-bit gray, or 32-bit integer gray kept as 16-bit
        key = image.info.get('transparency')  # a transparent gray value (a 16-bit PNG's tRNS): alpha 0 there
        channels, dtype = (1 if key is None else 2), np.uint16

        def convert(band) -> np.ndarray:
            gray = np.clip(np.asarray(band), 0, 65535)
            return gray if key is None else np.stack([gray, np.where(gray == key, 0, 65535)], -1)
    elif image.mode == 'CMYK':
        channels, dtype, convert, icc = 3, np.uint8, _cmyk_converter(icc), None
    else:
        mode = _target_mode(image)
        channels, dtype = len(mode), np.uint8

        def convert(band) -> np.ndarray:
            band.info = image.info  # a crop has no info: the palette's transparent index lives there
            return np.asarray(band if band.mode == mode else band.convert(mode))
    width, height = image.size
    pixels = np.empty((height, width, channels), dtype)
    rows = max(1, BAND_BYTES // (4 * width))
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(height, top + rows)))
        pixels[top:top + band.height] = convert(band).reshape(band.height, width, channels)
    return pixels, icc


def _cmyk_converter(icc):
    """A function PIL CMYK image -> uint8 sRGB array [h, w, 3], through the ICC profile when it has a usable one."""
    if icc:
        try:
            transform = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                                ImageCms.createProfile('sRGB'), 'CMYK', 'RGB')
            return lambda band: np.asarray(ImageCms.applyTransform(band, transform))
        except ImageCms.PyCMSError:
            pass
    return lambda band: np.asarray(band.convert('RGB'))


def encode_image(picture: Picture, ext: str) -> bytes:
    """Bytes of `picture` as a file of type `ext` (a key of FORMATS), with its ICC profile and its EXIF block (its
    image size tags set to the picture's; not in TIFF files, whose writer cannot take a camera's Exif directory).

    JPEG, WebP and AVIF hold 8 bits (16-bit pixels are rounded to 8); JPEG and WebP no gray + alpha, WebP no gray
    either (PIL writes it as RGB), AVIF no gray + alpha (written as RGBA). 16-bit colour is written by OpenCV,
    with the profile added to the PNG (iCCP chunk) or TIFF (ICC tag) by hand. Raises ValueError for pixels that
    are not uint8 or uint16.
    """
    pixels, fmt = picture.pixels, FORMATS[ext]
    exif = None if fmt == 'TIFF' else _exif_of_size(picture.exif, pixels.shape[1], pixels.shape[0])
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f'cannot write {pixels.dtype} pixels: only uint8 and uint16')
    if fmt in EIGHT_BIT_FORMATS:
        pixels = to_8bit(pixels)
    if pixels.dtype == np.uint16 and pixels.shape[2] > 1:
        if pixels.shape[2] == 2:  # 16-bit gray + alpha: neither library writes it, so as RGBA
            pixels = pixels[..., [0, 0, 0, 1]]
        ok, encoded = cv2.imencode('.' + ext, pixels[..., [2, 1, 0, 3][:pixels.shape[2]]])
        if not ok:
            raise ValueError(f'OpenCV could not encode a 16-bit {ext} image')
        if fmt == 'TIFF':
            return _tiff_with_icc(encoded.tobytes(), picture.icc_profile)
        return _png_with_chunks(encoded.tobytes(), picture.icc_profile, exif)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)  # L, I;16, LA, RGB or RGBA
    buffer = io.BytesIO()
    extra = {name: value for name, value in (('icc_profile', picture.icc_profile), ('exif', exif)) if value}
    image.save(buffer, format=fmt, **SAVE_OPTIONS[fmt], **extra)
    return buffer.getvalue()


def to_8bit(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels [H, W, C] of uint8 (returned as they are) or uint16 ones (round(x / 257), no float copy)."""
    if pixels.dtype == np.uint8:
        return pixels
    return cv2.convertScaleAbs(pixels, alpha=1 / 257).reshape(pixels.shape)


def as_rgb(pixels, alpha=False, keep_depth=False):
    """RGB pixels [H, W, 3] (alpha: RGBA [H, W, 4] where the pixels have alpha) of a Picture's pixels [H, W, C], or
    of gray pixels [H, W].

    Gray (C = 1, 2, or no channel axis) is copied to the three channels; alpha (C = 2, 4) is dropped unless `alpha`.
    uint16 samples are rounded to uint8 as the writer does (`to_8bit`: round(x / 257), the same as np.round(x / 257)
    for every level) unless `keep_depth`. RGB pixels that need no change are returned as a view, not a copy.
    ValueError for an array of another number of dimensions.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3:
        raise ValueError(f'pixels must be [H, W, C] or gray [H, W], got shape {pixels.shape}')
    channels = pixels.shape[2]
    kept = channels if alpha or channels in (1, 3) else channels - 1  # colour channels (and alpha)
    colour = pixels[..., :kept] if keep_depth else to_8bit(pixels[..., :kept])
    return colour[..., [0, 0, 0, 1][:kept + 2]] if kept < 3 else colour


def _png_with_chunks(png, icc, exif):
    """PNG bytes with an iCCP chunk (the ICC profile, zlib-compressed) and an eXIf chunk (an EXIF block, without
    its 'Exif\\0\\0' header), where given, inserted after IHDR, which ends at byte 33."""
    bodies = [b'iCCP' + b'ICC profile\0\0' + zlib.compress(icc)] if icc else []
    if exif:
        bodies.append(b'eXIf' + exif.removeprefix(b'Exif\0\0'))
    chunks = b''.join(struct.pack('>I', len(body) - 4) + body + struct.pack('>I', zlib.crc32(body)) for body in bodies)
    return png[:33] + chunks + png[33:]


def _tiff_with_icc(tiff, icc):
    """Classic TIFF bytes with the ICC profile tag added to the first image's directory.

    The profile and a copy of the directory with one more entry (entries stay sorted by tag) are appended, and
    the header points to the new directory; everything else, offsets included, is left where it was.
    """
    if not icc:
        return tiff
    order = '<' if tiff[:2] == b'II' else '>'
    (start,) = struct.unpack(order + 'I', tiff[4:8])
    (count,) = struct.unpack(order + 'H', tiff[start:start + 2])
    entries = [tiff[start + 2 + 12 * k:start + 14 + 12 * k] for k in range(count)]
    next_directory = tiff[start + 2 + 12 * count:start + 6 + 12 * count]
    body = tiff + b'\0' * (len(tiff) % 2)  # TIFF offsets are even
    icc_offset = len(body)
    body += icc + b'\0' * (len(icc) % 2)
    entries.append(struct.pack(order + 'HHII', ICC_PROFILE_TAG, TIFF_UNDEFINED, len(icc), icc_offset))
    entries.sort(key=lambda entry: struct.unpack(order + 'H', entry[:2])[0])
    directory = struct.pack(order + 'H', len(entries)) + b''.join(entries) + next_directory
    return body[:4] + struct.pack(order + 'I', len(body)) + body[8:] + directory


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes to `path` all at once (`ciaosr_arch.files.atomic_file`: a hidden temporary file in the
    same folder, fsync, rename). An interruption leaves either the old file or the complete new one, never a
    truncated image (a SIGKILL can leave a `.NAME.PID-*.part` file behind, which `remove_partial_files` clears)."""
    with atomic_file(path) as file:
        file.write(data)


def remove_partial_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete the temporary files that `write_atomic` left in `folder` (and its sub-folders if `recursive`) when
    its process was killed: hidden `.NAME.PID-XXXXXXXX.part` files whose writing process no longer runs
    (`ciaosr_arch.files.is_abandoned`), so the files that other runs are writing now stay. Returns the deleted
    paths, sorted."""
    folder = Path(folder)
    removed = []
    for path in sorted(folder.rglob('.*.part') if recursive else folder.glob('.*.part')):
        if path.is_file() and is_abandoned(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def list_images(root: Path, recursive: bool = False) -> list[Path]:
    """Image files in the folder `root` (with `recursive`, in its sub-folders too), sorted: list[Path].

    An image file is one of `list_files` whose suffix, in any case, is in IMAGE_SUFFIXES. Nothing is opened: see
    `probe_image` and `read_image`. Raises NotADirectoryError (or FileNotFoundError) if `root` is not a folder.
    """
    return [path for path in list_files(root, recursive) if path.suffix.lower() in IMAGE_SUFFIXES]


def shared_stems(paths: Iterable[Path]) -> list[str]:
    """The file stems that more than one of `paths` has (photo.png and photo.jpg), sorted: outputs named after the
    stem would overwrite each other."""
    return sorted(stem for stem, n in Counter(Path(path).stem for path in paths).items() if n > 1)


def list_files(root: Path, recursive: bool = False) -> list[Path]:
    """Regular files (or links to one) in the folder `root` (with `recursive`, in its sub-folders too), sorted.

    Hidden files and folders (names starting with '.': `.DS_Store`, macOS `._photo.jpg` resource forks,
    `write_atomic`'s temporary files) are left out. Raises NotADirectoryError (or FileNotFoundError) if `root`
    is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise (NotADirectoryError if root.exists() else FileNotFoundError)(f'not a folder: {root}')
    candidates = root.rglob('*') if recursive else root.iterdir()
    return sorted(path for path in candidates
                  if path.is_file() and not any(part.startswith('.') for part in path.relative_to(root).parts))
