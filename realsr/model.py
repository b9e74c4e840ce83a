"""Two-stage real-world training of CiaoSR (spec 4.2) on pairs synthesised on the model's device."""
from collections import OrderedDict
from contextlib import contextmanager
from os import path as osp

import basicsr.archs.vgg_arch
import torch
import torchvision
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from ciaosr_arch.models import CiaoSRModel

from .degradations import RealPairSynthesis


def as_queries(img):
    """Image [B, 3, q, q] -> its pixels row-major [B, q * q, 3] (the layout of predictions and targets)."""
    return img.flatten(2).transpose(1, 2)


def as_image(rgb, side):
    """Predictions of a side x side query window [B, side^2, 3] -> image [B, 3, side, side]."""
    return rgb.transpose(1, 2).reshape(rgb.shape[0], 3, side, side)


@MODEL_REGISTRY.register()
class RealCiaoSRNetModel(CiaoSRModel):
    """Stage 1: L1 between the predicted and the unsharp-masked GT pixels of a query window.

    `feed_data` turns a RealWorldSRDataset batch (GT crops + kernels) into an LR crop and the
    `query_window`^2 GT pixels it should predict, by `RealPairSynthesis` on the model's device
    (options `degradation:`, defaults = spec 4.2). Batches without kernels (validation) go to CiaoSRModel.
    Training, EMA, bf16 autocast and validation are CiaoSRModel's.
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.synthesis = RealPairSynthesis(opt.get('degradation')).to(self.device)

    @torch.no_grad()
    def feed_data(self, data):
        if 'kernel1' not in data:
            super().feed_data(data)
            return
        pair = self.synthesis(*(data[key].to(self.device) for key in ('gt', 'kernel1', 'kernel2', 'sinc_kernel')))
        self.lq, self.coord, self.cell = pair['lq'], pair['coord'], pair['cell']
        self.gt_window, self.gt_usm_window = pair['gt'], pair['gt_usm']
        self.gt = as_queries(self.gt_usm_window)  # the pixel-loss target


def vgg_weights_file(path, vgg_type):
    """Local torchvision ImageNet weights for BasicSR's VGGFeatureExtractor; an error if there are none.

    `path` (option `perceptual_opt.vgg_weights`) if given, else BasicSR's own location
    (experiments/pretrained_models/ under the working directory) or torchvision's download cache
    ($TORCH_HOME/hub/checkpoints/). Nothing is downloaded and random weights are never a fallback.
    """
    url = torchvision.models.get_model_weights(vgg_type).IMAGENET1K_V1.url
    name = osp.basename(url)
    candidates = [path] if path else [osp.join('experiments', 'pretrained_models', name),
                                      osp.join(torch.hub.get_dir(), 'checkpoints', name)]
    found = [candidate for candidate in candidates if osp.isfile(candidate)]
    if found:
        return found[0]
    places = '\n'.join(f'  {osp.abspath(candidate)}' for candidate in candidates)
    hint = ('(the path set in train.perceptual_opt.vgg_weights)' if path else
            'or set train.perceptual_opt.vgg_weights to the file (TORCH_HOME moves the second place)')
    where = 'at one of' if len(candidates) > 1 else 'at'
    raise FileNotFoundError(f'{vgg_type} ImageNet weights for the perceptual loss are missing and are not downloaded: '
                            f'put torchvision\'s file {url} {where}\n{places}\n{hint}')


@contextmanager
def perceptual_weights_checked(perceptual_opt):
    """While building the losses: BasicSR's VGG loads the file of `vgg_weights_file` (checked first).

    Pops `vgg_weights` from `perceptual_opt` (BasicSR's PerceptualLoss does not know it) and points
    BasicSR's own local-file path at it, so VGGFeatureExtractor never tries to download.
    """
    if not perceptual_opt:
        yield
        return
    weights = vgg_weights_file(perceptual_opt.pop('vgg_weights', None), perceptual_opt.get('vgg_type', 'vgg19'))
    get_root_logger().info(f'Perceptual loss: VGG weights from {osp.abspath(weights)}')
    default = basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH
    basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH = weights
    try:
        yield
    finally:
        basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH = default


@MODEL_REGISTRY.register()
class RealCiaoSRGANModel(RealCiaoSRNetModel, SRGANModel):
    """Stage 2: L1 + VGG perceptual + GAN losses on the query window seen as an image [B, 3, q, q].

    The window is a contiguous block of output pixels, so the perceptual and GAN losses see a real,
    spatially coherent image in [0, 1] (the official code reshapes scattered queries instead).
    L1 and perceptual targets: sharpened GT; GAN real samples: plain GT. One discriminator step per
    generator step. Discriminator, losses, optimisers and checkpoints (net_d) are SRGANModel's;
    the VGG weights must exist locally (`vgg_weights_file`), checked before the losses are built.
    """

    def init_training_settings(self):
        with perceptual_weights_checked(self.opt['train'].get('perceptual_opt')):
            super().init_training_settings()

    def optimize_parameters(self, current_iter):
        side = self.gt_window.shape[-1]
        for p in self.net_d.parameters():
            p.requires_grad = False
        self.optimizer_g.zero_grad()
        with self.autocast():
            self.output = self.net_g(self.lq, self.coord, self.cell)
        sr = as_image(self.output.float(), side)

        losses = OrderedDict()
        if self.cri_pix:
            losses['l_g_pix'] = self.cri_pix(sr, self.gt_usm_window)
        if self.cri_perceptual:
            losses['l_g_percep'], _ = self.cri_perceptual(sr, self.gt_usm_window)
        losses['l_g_gan'] = self.cri_gan(self.net_d(sr), True, is_disc=False)
        sum(losses.values()).backward()
        self.optimizer_g.step()

        for p in self.net_d.parameters():
            p.requires_grad = True
        self.optimizer_d.zero_grad()
        real_pred = self.net_d(self.gt_window)
        losses['l_d_real'] = self.cri_gan(real_pred, True, is_disc=True)
        losses['l_d_real'].backward()
        fake_pred = self.net_d(sr.detach())
        losses['l_d_fake'] = self.cri_gan(fake_pred, False, is_disc=True)
        losses['l_d_fake'].backward()
        self.optimizer_d.step()
        losses['out_d_real'], losses['out_d_fake'] = real_pred.detach().mean(), fake_pred.detach().mean()

        self.log_dict = self.reduce_loss_dict(losses)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
