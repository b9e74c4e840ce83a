"""Training data for arbitrary-scale SR: random scale per sample, LR made on the fly."""
import io
import random

import cv2
import numpy as np
import torch
from basicsr.data.data_util import paths_from_lmdb
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, get_root_logger, imfrombytes, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from PIL import Image
from torch.utils import data

from ..archs.coords import make_coord
from ..errors import DataError, error_line, listing
from ..options import NUMBER, OneOf, Open, OptionsError
from ..resize import downsample
from .folders import image_paths


def sample_queries(gt, n_query):
    """Random output pixels of an HR patch: RGB [Q, 3], coord [Q, 2], cell [Q, 2] (all if Q >= H*W)."""
    h, w = gt.shape[-2:]
    coord = make_coord((h, w))
    rgb = gt.reshape(3, -1).t()
    if n_query < h * w:
        keep = torch.from_numpy(np.random.choice(h * w, n_query, replace=False))
        coord, rgb = coord[keep], rgb[keep]
    cell = torch.tensor([2 / h, 2 / w]).expand_as(coord).clone()
    return rgb, coord, cell


class UnreadableImage(DataError):
    """A training image whose pixels cannot be decoded (a truncated or corrupt file)."""


@DATASET_REGISTRY.register()
class ArbitraryScaleSRDataset(data.Dataset):
    """HR images -> (LR patch, sampled HR pixels) at a random scale s ~ U[scale_min, scale_max).

    Per sample: GT crop of side round(lq_size * s) at a random position, LR = bicubic resize of the
    uint8 crop to lq_size x lq_size ('pil' as the official code, or 'matlab'), flips/transpose, then
    `sample_q` output pixels with their coord and cell. Images too small for the drawn scale are
    replaced by a random image that is large enough (so small images do not bias the scale distribution).

    Checked when the dataset is built (DataError): every file must be an image whose header can be read
    (the message names the files that are not), and at least one image must be as large as the largest
    GT crop, round(lq_size * scale_max) px on its short side (the message names that number and the
    largest short side found). Images smaller than round(lq_size * scale_min) are never used: a warning
    counts and names them. An image whose pixel data turns out truncated or corrupt while training is
    skipped with a warning naming it, and the sample is cut from another image (with `cache_images` all
    images are decoded when the dataset is built, and such a file is refused then).

    Options: dataroot_gt (folder or LMDB) or gt_folders (list of folders), io_backend, lq_size (48),
    scale_min (1), scale_max (4), sample_q (2304), downsample ('pil'), use_hflip, use_rot,
    cache_images (decode every image once and keep it in memory; for small sets).
    """

    OPTIONS = {'dataroot_gt': str, 'gt_folders': list, 'io_backend': Open(type=str), 'lq_size': int,
               'scale_min': NUMBER, 'scale_max': NUMBER, 'sample_q': int, 'downsample': OneOf(('pil', 'matlab')),
               'use_hflip': bool, 'use_rot': bool, 'cache_images': bool}  # checked by ciaosr_arch.options

    DEFAULTS = {'lq_size': 48, 'scale_min': 1.0, 'scale_max': 4.0, 'sample_q': 2304}  # of the options not given

    @classmethod
    def check_values(cls, where, opt):
        """OptionsError (one line, `where` naming the section) for option values that cannot work together: lq_size
        below 1, scale_min above scale_max or below 1, more sampled pixels (sample_q) than the smallest GT crop has.
        Called by `ciaosr_arch.options.check_options` before anything is created."""
        lq_size, low, high, queries = ({**cls.DEFAULTS, **opt}[key] for key in cls.DEFAULTS)
        if lq_size < 1:
            raise OptionsError(f'{where}.lq_size: must be at least 1, got {lq_size}')
        if not 1 <= low <= high:
            raise OptionsError(f'{where}: scale_min and scale_max must have 1 <= scale_min <= scale_max, got '
                               f'{low} and {high}')
        smallest = round(lq_size * low) ** 2
        if queries > smallest:
            raise OptionsError(f'{where}.sample_q: {queries} is more than the {smallest} GT pixels '
                               'of the smallest crop (round(lq_size x scale_min) squared); lower it or raise lq_size')

    def __init__(self, opt):
        super().__init__()
        self.opt = {**self.DEFAULTS, **opt}  # with the defaults of lq_size, the scales and sample_q
        self.io_opt = dict(opt.get('io_backend', {'type': 'disk'}))
        self.file_client = None  # opened in each DataLoader worker (an LMDB handle must not cross a fork)
        if self.io_opt['type'] == 'lmdb':
            self.io_opt['db_paths'], self.io_opt['client_keys'] = [opt['dataroot_gt']], ['gt']
            self.paths = paths_from_lmdb(opt['dataroot_gt'])
        else:
            folders = opt.get('gt_folders') or [opt['dataroot_gt']]
            self.paths = sorted(p for folder in folders for p in image_paths(folder))
        if not self.paths:
            raise DataError(f'no training images found in {opt.get("gt_folders") or opt["dataroot_gt"]}')
        self.lq_size = self.opt['lq_size']
        self.short_sides = self.read_short_sides()
        self.check_sizes()
        self.unreadable = set()  # indices of images found corrupt while training (per DataLoader worker)
        self.cache = [self.read(i) for i in range(len(self.paths))] if opt.get('cache_images') else None

    def open_client(self):
        """A new BasicSR FileClient for `io_backend`."""
        backend = dict(self.io_opt)
        return FileClient(backend.pop('type'), **backend)

    def read_short_sides(self):
        """Short side (px) of every image, from its header only; DataError naming the files without a readable one."""
        client = None if self.io_opt['type'] == 'disk' else self.open_client()
        sides, bad = [], []
        for path in self.paths:
            try:
                with Image.open(path if client is None else io.BytesIO(client.get(path, 'gt'))) as img:
                    sides.append(min(img.size))
            except Exception as err:  # not an image, empty, unknown format, PIL's decompression-bomb limit
                bad.append(f'{path} ({error_line(err, named=True)})')
        if bad:
            raise DataError(f'{len(bad)} training file(s) are not readable images: {listing(bad)}; '
                            'remove them from the training folders')
        return sides

    def gt_side_range(self):
        """(smallest, largest) side in px of the square GT crops that samples cut: round(lq_size * scale_min),
        round(lq_size * scale_max)."""
        return round(self.lq_size * self.opt['scale_min']), round(self.lq_size * self.opt['scale_max'])

    def check_sizes(self):
        """DataError unless an image is as large as the largest GT crop; a warning names the images that are
        smaller than the smallest crop (never used)."""
        smallest, largest = self.gt_side_range()
        biggest = max(range(len(self.paths)), key=self.short_sides.__getitem__)
        if self.short_sides[biggest] < largest:
            raise DataError(
                f'training images must be at least {largest} px on their short side (lq_size {self.lq_size} x '
                f'scale_max {self.opt["scale_max"]}, rounded), but the largest short side is '
                f'{self.short_sides[biggest]} px ({self.paths[biggest]}): use larger images or lower lq_size/scale_max')
        unused = [path for path, side in zip(self.paths, self.short_sides) if side < smallest]
        if unused:
            get_root_logger().warning(f'{len(unused)} of {len(self.paths)} training images are smaller than the '
                                      f'smallest crop ({smallest} px) and are never used: {listing(unused)}')

    def read(self, index):
        """uint8 RGB HxWx3 image number `index` (grayscale files are expanded to 3 channels).

        Raises UnreadableImage naming the file when its pixels cannot be decoded."""
        if self.file_client is None:
            self.file_client = self.open_client()
        img = imfrombytes(self.file_client.get(self.paths[index], 'gt'), float32=False)
        if img is None:
            raise UnreadableImage(f'{self.paths[index]}: the image data cannot be decoded (truncated or corrupt)')
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def image_at_least(self, index, side):
        """(index, image) of image `index` if it is readable and at least `side` px on its short side, else of a
        random such image. Images that fail to decode are skipped with a warning and never tried again."""
        while True:
            if self.short_sides[index] < side or index in self.unreadable:
                candidates = [i for i, s in enumerate(self.short_sides) if s >= side and i not in self.unreadable]
                if not candidates:
                    raise DataError(f'no readable training image is at least {side} px on its short side')
                index = random.choice(candidates)
            if self.cache is not None:
                return index, self.cache[index]
            try:
                return index, self.read(index)
            except UnreadableImage as err:
                get_root_logger().warning(f'skipping a training image: {err}')
                self.unreadable.add(index)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        scale = random.uniform(self.opt['scale_min'], self.opt['scale_max'])
        gt_side = round(self.lq_size * scale)
        index, img = self.image_at_least(index, gt_side)
        y = random.randint(0, img.shape[0] - gt_side)
        x = random.randint(0, img.shape[1] - gt_side)
        gt = np.ascontiguousarray(img[y:y + gt_side, x:x + gt_side])
        lq = downsample(gt, (self.lq_size, self.lq_size), self.opt.get('downsample', 'pil'))
        gt, lq = augment([gt, lq], self.opt.get('use_hflip', True), self.opt.get('use_rot', True))
        gt, lq = (a / 255 for a in img2tensor([gt, lq], bgr2rgb=False))
        rgb, coord, cell = sample_queries(gt, self.opt['sample_q'])
        return {'lq': lq, 'gt': rgb, 'coord': coord, 'cell': cell, 'scale': scale, 'gt_path': self.paths[index]}
