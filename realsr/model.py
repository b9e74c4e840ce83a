"""Two-stage real-world training of CiaoSR (official real-world configs) on pairs synthesised on the model's device."""
from collections import OrderedDict

import torch
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from ciaosr_arch.archs.implicit_base import channels_last
from ciaosr_arch.models import CiaoSRModel
from ciaosr_arch.options import NUMBER, Open, kinds_of

from .degradations import SYNTHESIS_DEFAULTS, RealPairSynthesis
from .perceptual import build_perceptual_loss


def as_image(rgb, side):
    """Predictions of a side x side query window [B, side^2, 3] -> image [B, 3, side, side]."""
    return rgb.transpose(1, 2).reshape(rgb.shape[0], 3, side, side)


@MODEL_REGISTRY.register()
class RealCiaoSRNetModel(CiaoSRModel):
    """Stage 1: L1 between the predicted and the unsharp-masked GT pixels of a query window.

    `feed_data` turns a RealWorldSRDataset batch (GT crops + kernels) into an LR crop and the
    `query_window`^2 GT pixels it should predict, by `RealPairSynthesis` on the model's device
    (options `degradation:`; defaults: the official recipe). Batches without kernels (validation) go to CiaoSRModel.
    Training, EMA, bf16 autocast and validation are CiaoSRModel's.
    """

    OPTIONS = {**CiaoSRModel.OPTIONS, 'degradation': kinds_of(SYNTHESIS_DEFAULTS)}

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
        self.gt = channels_last(self.gt_usm_window)  # the pixel-loss target, [B, q * q, 3] as the predictions


@MODEL_REGISTRY.register()
class RealCiaoSRGANModel(RealCiaoSRNetModel, SRGANModel):
    """Stage 2: L1 + VGG perceptual + GAN losses on the query window seen as an image [B, 3, q, q].

    The window is a contiguous block of output pixels, so the perceptual and GAN losses see a real,
    spatially coherent image in [0, 1] (the official code reshapes scattered queries instead).
    L1 and perceptual targets: sharpened GT; GAN real samples: plain GT. One discriminator step per
    generator step. Discriminator, losses, optimisers and checkpoints (net_d) are SRGANModel's;
    the VGG19 weights come from local files only (`realsr.perceptual`), checked before the losses are built.
    """

    OPTIONS = {**RealCiaoSRNetModel.OPTIONS,
               'train': {**RealCiaoSRNetModel.OPTIONS['train'], 'optim_d': Open(type=str, lr=NUMBER),
                         'perceptual_opt': Open(type=str, perceptual_weight=NUMBER),
                         'gan_opt': Open(type=str, loss_weight=NUMBER), 'net_d_iters': NUMBER,
                         'net_d_init_iters': NUMBER}}

    def init_training_settings(self):
        """SRGANModel's settings, with the perceptual loss built by `build_perceptual_loss` (local VGG19 only),
        checked first so that missing weights stop training before anything else is built."""
        train_opt = self.opt['train']
        perceptual_opt = train_opt.pop('perceptual_opt', None)
        cri_perceptual = build_perceptual_loss(perceptual_opt, get_root_logger()) if perceptual_opt else None
        super().init_training_settings()
        self.cri_perceptual = cri_perceptual.to(self.device) if cri_perceptual else None
        if perceptual_opt:
            train_opt['perceptual_opt'] = perceptual_opt

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
        self.stop_if_not_finite(losses, current_iter)
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
