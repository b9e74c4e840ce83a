"""What users run instead of CiaoSR, for side-by-side reports: fixed-scale networks and other tools' outputs.

`FixedScaleUpscaler` runs any fixed-scale SR network that spandrel (https://github.com/chaiNNer-org/spandrel)
can load (ESRGAN / Real-ESRGAN, SwinIR, HAT, ... from .pth or .safetensors) the way Real-ESRGAN's own
command line does (`inference_realesrgan.py --outscale S`): the network at its native scale, in tiles
with context padding, rounded to 8 bits, then resized to the asked size with OpenCV's Lanczos4
(also when the asked scale is above the native one). `OutputsFolder` takes images another tool wrote
and scores them as they are.
"""
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch

from ciaosr_arch.errors import error_line
from ciaosr_arch.evaluation import scale_label
from ciaosr_arch.image import to_pixels, to_tensor

from . import image_io

if TYPE_CHECKING:
    import spandrel

TILE_PAD = 10  # context pixels around each tile: the default of Real-ESRGAN's --tile_pad


class UpscalerError(ValueError):
    """A model or outputs folder that cannot be used; the message says why in one line."""


class MissingOutput(Exception):
    """An outputs folder has no usable image for one input at one scale; the message says why."""


def lanczos_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV Lanczos4 (8x8 taps, no antialiasing) resize of a uint8 [h, w, C] array to size (H, W); uint8 out.

    This is the resize of Real-ESRGAN's `--outscale` (`cv2.resize(..., interpolation=cv2.INTER_LANCZOS4)` of its
    8-bit output); an unchanged size returns the array itself.
    """
    if tuple(size) == img.shape[:2]:
        return img
    return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LANCZOS4)


@torch.no_grad()
def run_tiled(model: Callable[[torch.Tensor], torch.Tensor], lr: torch.Tensor, scale: int, tile: int = 0,
              tile_pad: int = TILE_PAD) -> torch.Tensor:
    """Output [1, C, h * scale, w * scale] of a fixed-scale network for lr [1, C, h, w], tile by tile.

    Real-ESRGAN's tiling: the input is cut into tile x tile squares (the last ones smaller); each is run with
    up to `tile_pad` pixels of the image around it as context, and only its own square's output is kept, so
    seams have `tile_pad` pixels of context on both sides. tile = 0, or an image within one tile: one pass.
    """
    height, width = lr.shape[-2:]
    if not tile or (height <= tile and width <= tile):
        return model(lr)
    out = lr.new_zeros(*lr.shape[:-2], height * scale, width * scale)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            pad_top, pad_left = max(top - tile_pad, 0), max(left - tile_pad, 0)
            piece = model(lr[..., pad_top:min(bottom + tile_pad, height), pad_left:min(right + tile_pad, width)])
            out[..., top * scale:bottom * scale, left * scale:right * scale] = piece[
                ..., (top - pad_top) * scale:(bottom - pad_top) * scale,
                (left - pad_left) * scale:(right - pad_left) * scale]
    return out


def load_spandrel(path: str | Path, device: str | torch.device = 'cpu') -> 'spandrel.ImageModelDescriptor[Any]':
    """spandrel ImageModelDescriptor of a 3-channel fixed-scale SR network file, fp32, in eval mode, on `device`.

    UpscalerError (one line) if the file is missing, cannot be read, holds an architecture spandrel does not
    know, or is not an RGB upscaler (restoration at scale 1, face restoration, gray, inpainting).
    """
    path = Path(path)
    if not path.is_file():
        raise UpscalerError(f'model file not found: {path}')
    try:
        import spandrel  # an extra
    except ModuleNotFoundError:
        raise UpscalerError(f'{path}: not a CiaoSR/LIIF checkpoint, and other networks need spandrel: '
                            'pip install "ciaosr[report]"') from None
    try:
        descriptor = spandrel.ModelLoader().load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise UpscalerError(f'{path}: neither a CiaoSR/LIIF checkpoint nor an architecture spandrel knows') from None
    except Exception as err:  # unpickling refused, truncated file, wrong extension: all reported alike
        raise UpscalerError(f'{path}: neither a CiaoSR/LIIF checkpoint nor a model file spandrel can read '
                            f'({error_line(err, named=True)})') from None
    kind = f'{descriptor.architecture.name} model'
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.purpose != 'SR':
        raise UpscalerError(f'{path}: a {kind} for {descriptor.purpose}, not an upscaler')
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise UpscalerError(f'{path}: a {kind} with {descriptor.input_channels} input and '
                            f'{descriptor.output_channels} output channels; only RGB models are supported')
    return descriptor.to(device, torch.float32).eval()


class FixedScaleUpscaler:
    """A fixed-scale SR network (spandrel) run at its native scale, resized to any size as Real-ESRGAN's CLI does.

    Call it with a uint8 [h, w, 3] RGB image and an output size (H, W): the network's uint8 output
    [h * scale, w * scale, 3] (fp32, tiled by `run_tiled`, clamped and rounded like a saved file) resized to
    (H, W) by `lanczos_resize`. The native output of the last image is kept, so asking for several sizes
    of the same array (compared by identity, not content) runs the network once.
    """

    def __init__(self, path: str | Path, device: str | torch.device = 'cpu', tile: int = 0,
                 tile_pad: int = TILE_PAD) -> None:
        self.path = Path(path)
        self.model = load_spandrel(path, device)
        self.device, self.tile, self.tile_pad = torch.device(device), tile, tile_pad
        self.scale = self.model.scale
        self.architecture = self.model.architecture.name
        self.runs = 0  # network passes over whole images (one per new input)
        self._last = None  # (input array, its native-scale uint8 output)

    def native(self, img: np.ndarray) -> np.ndarray:
        """uint8 [h * scale, w * scale, 3] network output for a uint8 [h, w, 3] image (cached for the last one)."""
        if self._last is None or self._last[0] is not img:
            tile = 0 if self.model.tiling.name == 'INTERNAL' else self.tile  # spandrel.ModelTiling
            sr = run_tiled(self.model, to_tensor(img, self.device), self.scale, tile, self.tile_pad)
            self._last = (img, to_pixels(sr[0]))
            self.runs += 1
        return self._last[1]

    def __call__(self, img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return lanczos_resize(self.native(img), size)

    def describe(self) -> str:
        """One line for reports: the network and how it was run."""
        tiling = f'{self.tile}-px tiles with {self.tile_pad} px of context' if self.tile else 'whole images'
        return (f'{self.architecture} x{self.scale} via spandrel ({self.path}), fp32, {tiling}; other scales: '
                f'its 8-bit x{self.scale} output resized with OpenCV Lanczos4 (Real-ESRGAN --outscale)')


class OutputsFolder:
    """Images made by another tool from the same inputs, scored as they are: no resampling.

    folders: {scale: folder of that tool's outputs at that scale}, listed by `image_io.list_images` (hidden
    files left out). A file belongs to the input with the same stem (`photo.png` -> `photo.jpg` is fine).
    Each file must be the output for the whole input: within 1 px of H * scale x W * scale per side (round,
    floor or ceil of non-integer sizes all pass); `check` refuses anything else up front, naming the file,
    since it was not made at that scale from that input. Inputs without a file get no value (see `output`).
    UpscalerError (one line) for a missing or empty folder, or two files with one stem.
    """

    def __init__(self, name: str, folders: Mapping[float, str | Path]) -> None:
        self.name, self.folders = name, {scale: Path(folder) for scale, folder in folders.items()}
        self.files = {}  # scale -> {stem: path}
        for scale, folder in self.folders.items():
            where = f'--outputs {name} {scale:g} {folder}'
            try:
                paths = image_io.list_images(folder)
            except (FileNotFoundError, NotADirectoryError) as err:
                raise UpscalerError(f'{where}: {err}') from None
            if not paths:
                raise UpscalerError(f'{where}: no images ({", ".join(image_io.IMAGE_SUFFIXES)}) in it')
            by_stem = {}
            for path in paths:
                if path.stem in by_stem:
                    raise UpscalerError(f'{where}: two files for one input: {by_stem[path.stem].name}, {path.name}')
                by_stem[path.stem] = path
            self.files[scale] = by_stem

    def check(self, inputs: dict[str, tuple[int, int]]) -> None:
        """Refuse (UpscalerError, one line) unreadable files, files of the wrong size, folders matching no input.

        inputs: {stem: (H, W) of the input file}. Reads image headers only.
        """
        for scale, by_stem in self.files.items():
            matched = [stem for stem in by_stem if stem in inputs]
            if not matched:
                names = sorted(inputs)
                raise UpscalerError(f'--outputs {self.name} {scale:g} {self.folders[scale]}: no file is named like '
                                    f'an input ({", ".join(names[:5])}{", ..." if len(names) > 5 else ""})')
            for stem in matched:
                path, (height, width) = by_stem[stem], inputs[stem]
                try:
                    info = image_io.probe_image(path)
                    out_h, out_w = info.height, info.width
                except image_io.ImageReadError as err:
                    raise UpscalerError(f'--outputs {self.name}: {path}: {err}') from None
                if abs(out_h - height * scale) >= 1 or abs(out_w - width * scale) >= 1:
                    raise UpscalerError(
                        f'--outputs {self.name}: {path} is {out_w}x{out_h}, but {scale_label(scale)} of the '
                        f'{width}x{height} input is {width * scale:g}x{height * scale:g}')

    def describe(self) -> str:
        """One line for reports: where the outputs come from."""
        folders = ', '.join(f'{scale_label(scale)} from {folder}' for scale, folder in self.folders.items())
        return f'outputs of another tool, scored as they are (no resampling): {folders}'

    def output(self, stem: str, full: tuple[int, int], box: tuple[int, int, int, int], size: tuple[int, int],
               scale: float, read_rgb: Callable[[Path], np.ndarray]) -> np.ndarray:
        """uint8 [H', W', 3] window of the tool's output for one input, matching the report's window of it.

        full: (H, W) of the input file; box: (top, left, h, w) of the report's window in it, in input pixels;
        size: (H', W') of the other methods' outputs for that window at `scale`; read_rgb: path -> uint8
        [H, W, 3]. Along a cropped axis the window starts at round(top * scale) (moved inside the output if
        needed) and is `size` long; along an uncropped axis the whole output is kept (so it may differ from
        `size` by 1 px). MissingOutput if there is no folder for `scale`, no file for `stem`, or the file
        cannot be decoded.
        """
        if scale not in self.files:
            raise MissingOutput(f'no --outputs folder for {scale_label(scale)}')
        path = self.files[scale].get(stem)
        if path is None:
            raise MissingOutput(f'no file named {stem}.* in {self.folders[scale]}')
        try:
            out = read_rgb(path)
        except image_io.ImageReadError as err:
            raise MissingOutput(f'{path}: {err}') from None
        top, left, height, width = box
        rows = _window(top, height, full[0], size[0], out.shape[0], scale)
        cols = _window(left, width, full[1], size[1], out.shape[1], scale)
        return out[rows, cols]


def _window(start, length, full, out_length, out_full, scale):
    """Slice of an output axis (out_full long) for the input span [start, start + length) of a full-long axis."""
    if length == full:
        return slice(0, out_full)
    first = max(0, min(round(start * scale), out_full - out_length))
    return slice(first, first + out_length)
