"""Validation/test data: HR benchmark images and their LR at a fixed (possibly non-integer) scale."""
import math

import cv2
from basicsr.utils import FileClient, imfrombytes, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from ..errors import DataError
from ..evaluation import benchmark_pair, to_rgb
from ..options import NUMBER, OneOf, Open, OptionsError
from .folders import image_paths


@DATASET_REGISTRY.register()
class SRBenchmarkDataset(data.Dataset):
    """HR images of a folder (`dataroot_gt`) with LR made by the benchmark protocol at `scale`.

    LR: LIIF's crop + MATLAB bicubic (or `downsample: pil`), 8-bit levels; gt: the cropped HR as RGB
    [3, H, W] in [0, 1]. Use with `CiaoSRModel` validation and a metric with `crop_border: scale`.
    """

    OPTIONS = {'dataroot_gt': str, 'scale': NUMBER, 'downsample': OneOf(('pil', 'matlab')),
               'io_backend': Open(type=str)}

    @classmethod
    def check_values(cls, where, opt):
        """OptionsError (one line, `where` naming the section) unless `scale` is a finite number >= 1 (a review: 0 and
        negative scales gave tracebacks, 0.5 ran). Called by `ciaosr_arch.options.check_options`."""
        scale = opt.get('scale')
        number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
        if not (number and math.isfinite(scale) and scale >= 1):
            raise OptionsError(f'{where}.scale: must be a finite number >= 1 (the HR images are down-sized by it), '
                               f'got {scale!r}')

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.paths = image_paths(opt['dataroot_gt'])
        if not self.paths:
            raise DataError(f"no images found in {opt['dataroot_gt']}")
        self.file_client = None

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        if self.file_client is None:
            backend = dict(self.opt.get('io_backend', {'type': 'disk'}))
            self.file_client = FileClient(backend.pop('type'), **backend)
        hr = imfrombytes(self.file_client.get(self.paths[index], 'gt'), flag='unchanged', float32=False)
        if hr is None:  # OpenCV cannot decode the bytes
            raise DataError(f'{self.paths[index]}: the image data cannot be decoded (truncated or corrupt)')
        hr = hr if hr.ndim == 2 else cv2.cvtColor(hr[..., :3], cv2.COLOR_BGR2RGB)
        try:
            lq, hr = benchmark_pair(hr, self.opt['scale'], self.opt.get('downsample', 'matlab'))
        except ValueError as err:  # an image too small for the scale
            raise DataError(f'{self.paths[index]}: {err}') from None
        # One array gives one tensor; BasicSR's inferred return type is list-or-tensor
        gt = img2tensor(to_rgb(hr), bgr2rgb=False) / 255  # pyright: ignore[reportOperatorIssue]
        return {'lq': lq[0], 'gt': gt, 'lq_path': self.paths[index], 'gt_path': self.paths[index]}
