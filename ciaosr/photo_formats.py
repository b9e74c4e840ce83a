"""The photo formats of phones and the web beyond Pillow's classics: HEIC/HEIF, AVIF, JPEG XL (and PSD, ICO).

AVIF, PSD and ICO are Pillow's own (Pillow 12 wheels bundle libavif). HEIC/HEIF and JPEG XL come from
Pillow plugins of the optional extra `formats`, registered here on first use:

- HEIC/HEIF: `pi-heif`, the decoder-only build of pillow-heif (libheif + libde265, LGPL-3.0; no x265 encoder,
  which is GPL). It reads iPhone photos with their orientation already applied by libheif, ICC profile, alpha,
  and 10/12-bit samples (scaled to 16 bits, see `heif_pixels`). There is no HEIC writer: HEIC becomes PNG.
- JPEG XL: `pillow-jxl-plugin` (Rust bindings to libjxl's decoder and encoder; the plugin is GPL-3.0-or-later,
  which is why it is an extra and not a dependency). It decodes the whole file when it is opened, so the size is
  read from the codestream's header first (`jxl_size`) and an oversized file is refused before decoding.
"""
import io
import struct
from functools import cache

import numpy as np
from PIL import Image, features

EXTRA = 'formats'
# suffix -> (format name, module of the plugin, or None for Pillow's own)
PLUGIN_SUFFIXES = {'.heic': ('HEIC', 'pi_heif'), '.heif': ('HEIF', 'pi_heif'), '.hif': ('HEIF', 'pi_heif'),
                   '.jxl': ('JPEG XL', 'pillow_jxl'), '.avif': ('AVIF', None)}
SUFFIXES = (*PLUGIN_SUFFIXES, '.psd', '.ico')
JXL_SIGNATURE = b'\xff\x0a'
JXL_CONTAINER = b'\x00\x00\x00\x0cJXL \r\n\x87\n'
JXL_RATIOS = ((1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1))  # SizeHeader ratio 1-7: width / height


@cache
def registered():
    """The plugin modules of the extra `formats` that are installed, registered with Pillow: frozenset of names."""
    found = set()
    try:
        import pi_heif
        pi_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
        found.add('pi_heif')
    except ImportError:
        pass
    try:
        import pillow_jxl  # noqa: F401  (importing it registers the JXL format)
        found.add('pillow_jxl')
    except ImportError:
        pass
    return frozenset(found)


def missing_reader(suffix):
    """Why files with this suffix (e.g. '.heic') cannot be read here, in one line, or None if they can."""
    name, module = PLUGIN_SUFFIXES.get(suffix.lower(), (None, None))
    if name is None:
        return None
    if module is None:
        return None if features.check('avif') else f'this Pillow {Image.__version__} was built without {name} support'
    if module in registered():
        return None
    return f'reading {name} needs the `{EXTRA}` extra: pip install "ciaosr[{EXTRA}]"'


def heif_pixels(data):
    """Pixels [H, W, C] uint16 (C = 1-4; 10/12-bit samples scaled to the 16-bit range) of the primary image of
    a HEIF file's bytes, upright; for files with more than 8 bits per sample, which pi-heif's Pillow plugin
    reduces to 8 bits. Raises ValueError/RuntimeError (libheif) for a damaged file."""
    import pi_heif
    heif = pi_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
    pixels = np.asarray(heif)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def jxl_size(head):
    """(width, height) from the first bytes of a JPEG XL file (a bare codestream or the ISO BMFF container; 64
    bytes are enough unless boxes precede the codestream), or None if they do not hold a codestream header."""
    if head.startswith(JXL_CONTAINER):
        head = _jxl_codestream(head)
    if not head.startswith(JXL_SIGNATURE):
        return None
    bits = _BitReader(head[2:])
    try:
        small = bits.read(1)
        height = (bits.read(5) + 1) * 8 if small else bits.u32()
        ratio = bits.read(3)
        if ratio:
            num, den = JXL_RATIOS[ratio - 1]
            return height * num // den, height
        return ((bits.read(5) + 1) * 8 if small else bits.u32()), height
    except IndexError:
        return None


def _jxl_codestream(data):
    """The start of the codestream in a JPEG XL container: the payload of its first `jxlc` or `jxlp` box."""
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack('>I4s', data[pos:pos + 8])
        header = 8
        if size == 1 and pos + 16 <= len(data):
            size, header = struct.unpack('>Q', data[pos + 8:pos + 16])[0], 16
        if kind == b'jxlc':
            return data[pos + header:]
        if kind == b'jxlp':
            return data[pos + header + 4:]  # after the part's index
        if size < header:  # 0: to the end of the file
            return b''
        pos += size
    return b''


class _BitReader:
    """Bits of a byte string, least significant bit first (the JPEG XL header's order)."""

    def __init__(self, data):
        self.value, self.pos = int.from_bytes(data, 'little'), 0
        self.length = 8 * len(data)

    def read(self, count):
        if self.pos + count > self.length:
            raise IndexError('past the end of the header')
        value = (self.value >> self.pos) & ((1 << count) - 1)
        self.pos += count
        return value

    def u32(self):
        """A dimension coded as SizeHeader's U32(1 + u(9), 1 + u(13), 1 + u(18), 1 + u(30))."""
        return 1 + self.read((9, 13, 18, 30)[self.read(2)])
