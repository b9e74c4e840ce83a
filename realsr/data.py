"""Training data of the real-world pipeline: GT crops and degradation kernels (the degradations run in the model)."""
import cv2
import numpy as np
from basicsr.data.transforms import augment
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

from ciaosr_arch.data import ArbitraryScaleSRDataset
from ciaosr_arch.options import OptionsError, kinds_of

from .degradations import KERNEL_DEFAULTS, blur_kernel, final_sinc_kernel

GT_SIZE = 400  # default GT crop side (Real-ESRGAN's)
MODEL_SIDE = ('lq_size', 'scale_min', 'scale_max', 'sample_q', 'downsample')  # the bicubic dataset's options whose
# counterparts here are the model's `degradation:` options (lq_size, scale_range, query_window), not this dataset's


@DATASET_REGISTRY.register()
class RealWorldSRDataset(ArbitraryScaleSRDataset):
    """HR images -> random `gt_size` crops in [0, 1] plus the kernels of Real-ESRGAN's degradations (official recipe).

    Reading (dataroot_gt / gt_folders, io_backend, cache_images) is ArbitraryScaleSRDataset's. Images
    smaller than the crop are reflect-padded first, as Real-ESRGAN does. Real-ESRGAN's own dataset is
    not used because it hard-codes 400 px crops; its kernel recipe is `blur_kernel`/`final_sinc_kernel`.
    Options: gt_size (400; at least lq_size x the largest scale), use_hflip, use_rot, and the kernel
    options of KERNEL_DEFAULTS (Real-ESRGAN's names). Returns gt [3, gt_size, gt_size], kernel1,
    kernel2, sinc_kernel [21, 21], gt_path.
    """

    OPTIONS = {**{key: kind for key, kind in ArbitraryScaleSRDataset.OPTIONS.items() if key not in MODEL_SIDE},
               'gt_size': int, **kinds_of(KERNEL_DEFAULTS)}

    @classmethod
    def check_values(cls, where, opt):
        """OptionsError for a gt_size below 1; the scales and the LR crop are the model's (`degradation:`), checked
        against gt_size there (`RealCiaoSRNetModel.check_values`)."""
        if opt.get('gt_size', GT_SIZE) < 1:
            raise OptionsError(f'{where}.gt_size: must be at least 1, got {opt["gt_size"]}')

    def __init__(self, opt):
        super().__init__(opt)
        self.kernel_opt = {key: opt.get(key, default) for key, default in KERNEL_DEFAULTS.items()}

    def gt_side_range(self):
        """Any image size works: images smaller than gt_size are reflect-padded."""
        return 1, 1

    def __getitem__(self, index):
        index, img = self.image_at_least(index, 1)
        size = self.opt.get('gt_size', GT_SIZE)
        h, w = img.shape[:2]
        if h < size or w < size:
            img = cv2.copyMakeBorder(img, 0, max(0, size - h), 0, max(0, size - w), cv2.BORDER_REFLECT_101)
        top, left = np.random.randint(img.shape[0] - size + 1), np.random.randint(img.shape[1] - size + 1)
        gt = augment(img[top:top + size, left:left + size], self.opt.get('use_hflip', True),
                     self.opt.get('use_rot', True))
        # One array gives one tensor; BasicSR's inferred return type is list-or-tensor
        return {'gt': img2tensor(gt, bgr2rgb=False) / 255,  # pyright: ignore[reportOperatorIssue]
                'kernel1': blur_kernel(self.kernel_opt), 'kernel2': blur_kernel(self.kernel_opt, '2'),
                'sinc_kernel': final_sinc_kernel(self.kernel_opt['final_sinc_prob']),
                'gt_path': self.paths[index]}
