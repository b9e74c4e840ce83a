"""Training data for arbitrary-scale SR: random scale per sample, LR made on the fly (spec 4.1)."""
import random

import cv2
import numpy as np
import torch
from basicsr.data.data_util import paths_from_folder, paths_from_lmdb
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, imfrombytes
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from ..archs.coords import make_coord
from .resize import resize_matlab, resize_pil


def downsample(img, size, method):
    """uint8 HxWx3 -> uint8 LR of `size` by 'pil' (official training) or 'matlab' bicubic."""
    if method == 'pil':
        return resize_pil(img, size)
    if method == 'matlab':
        return np.clip(np.round(resize_matlab(img, size)), 0, 255).astype(np.uint8)
    raise ValueError(f"downsample must be 'pil' or 'matlab', got {method!r}")


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


@DATASET_REGISTRY.register()
class ArbitraryScaleSRDataset(data.Dataset):
    """HR images -> (LR patch, sampled HR pixels) at a random scale s ~ U[scale_min, scale_max).

    Per sample: GT crop of side round(lq_size * s) at a random position, LR = bicubic resize of the
    uint8 crop to lq_size x lq_size ('pil' as the official code, or 'matlab'), flips/transpose, then
    `sample_q` output pixels with their coord and cell. Images too small for the drawn scale are
    replaced by another random image (so small images do not bias the scale distribution).

    Options: dataroot_gt (folder or LMDB) or gt_folders (list of folders), io_backend, lq_size (48),
    scale_min (1), scale_max (4), sample_q (2304), downsample ('pil'), use_hflip, use_rot,
    cache_images (decode every image once and keep it in memory; for small sets).
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.io_opt = dict(opt.get('io_backend', {'type': 'disk'}))
        self.file_client = None
        if self.io_opt['type'] == 'lmdb':
            self.io_opt['db_paths'], self.io_opt['client_keys'] = [opt['dataroot_gt']], ['gt']
            self.paths = paths_from_lmdb(opt['dataroot_gt'])
        else:
            folders = opt.get('gt_folders') or [opt['dataroot_gt']]
            self.paths = sorted(p for folder in folders for p in paths_from_folder(folder))
        if not self.paths:
            raise ValueError(f'no training images found in {opt.get("gt_folders") or opt["dataroot_gt"]}')
        self.lq_size = opt.get('lq_size', 48)
        self.cache = [self.read(i) for i in range(len(self.paths))] if opt.get('cache_images') else None

    def read(self, index):
        """uint8 RGB HxWx3 image number `index` (grayscale files are expanded to 3 channels)."""
        if self.file_client is None:
            backend = dict(self.io_opt)
            self.file_client = FileClient(backend.pop('type'), **backend)
        img = imfrombytes(self.file_client.get(self.paths[index], 'gt'), float32=False)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        scale = random.uniform(self.opt.get('scale_min', 1.0), self.opt.get('scale_max', 4.0))
        gt_side = round(self.lq_size * scale)
        for _ in range(100):
            img = self.cache[index] if self.cache is not None else self.read(index)
            if min(img.shape[:2]) >= gt_side:
                break
            index = random.randrange(len(self.paths))
        else:
            raise ValueError(f'no training image is at least {gt_side} px on its short side')
        y = random.randint(0, img.shape[0] - gt_side)
        x = random.randint(0, img.shape[1] - gt_side)
        gt = np.ascontiguousarray(img[y:y + gt_side, x:x + gt_side])
        lq = downsample(gt, (self.lq_size, self.lq_size), self.opt.get('downsample', 'pil'))
        gt, lq = augment([gt, lq], self.opt.get('use_hflip', True), self.opt.get('use_rot', True))
        gt, lq = (torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float() / 255 for a in (gt, lq))
        rgb, coord, cell = sample_queries(gt, self.opt.get('sample_q', 2304))
        return {'lq': lq, 'gt': rgb, 'coord': coord, 'cell': cell, 'scale': scale, 'gt_path': self.paths[index]}
