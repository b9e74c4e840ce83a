"""Two-stage real-world training of CiaoSR (official real-world configs) on pairs synthesised on the model's device."""
from collections import OrderedDict

import torch
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from ciaosr_arch.archs.coords import switch_probes
from ciaosr_arch.archs.implicit_base import channels_last
from ciaosr_arch.models import CiaoSRModel

from .degradations import RealPairSynthesis
from .perceptual import build_perceptual_loss

CONTINUITY_DEFAULTS = {'loss_weight': 1.0, 'num_probes': 512, 'delta': 0.05}


def as_image(rgb, side):
    """Predictions of a side x side query window [B, side^2, 3] -> image [B, 3, side, side]."""
    return rgb.transpose(1, 2).reshape(rgb.shape[0], 3, side, side)


def switch_jump(rgb):
    """Mean |jump| of predictions at `switch_probes` quadruples [B, 4N, 3] (queries at -3, -1, 1, 3 x delta across a
    switch line): the step across the line minus the mean of the steps beside it, so a smooth output (any
    gradient, even a curved one to first order) scores ~0 and a discontinuity at the line scores its height."""
    r0, r1, r2, r3 = rgb.view(rgb.shape[0], -1, 4, rgb.shape[-1]).unbind(2)
    return ((r2 - r1) - ((r1 - r0) + (r3 - r2)) / 2).abs().mean()


@MODEL_REGISTRY.register()
class RealCiaoSRNetModel(CiaoSRModel):
    """Stage 1: L1 between the predicted and the unsharp-masked GT pixels of a query window.

    `feed_data` turns a RealWorldSRDataset batch (GT crops + kernels) into an LR crop and the
    `query_window`^2 GT pixels it should predict, by `RealPairSynthesis` on the model's device
    (options `degradation:`; defaults: the official recipe). Batches without kernels (validation) go to CiaoSRModel.
    EMA, bf16 autocast, a frozen encoder and validation are CiaoSRModel's.

    Continuity (`train.continuity_opt: {loss_weight, num_probes, delta}`, defaults CONTINUITY_DEFAULTS; this
    project's addition): `num_probes` `switch_probes` quadruples per LR crop are decoded with the window's queries,
    and `switch_jump` of their predictions is added with `loss_weight` (`l_continuity`). It ties together the
    predictions on either side of the lines where the neighbour set switches, which the window loss alone leaves
    free (a GAN stage learns to sharpen with a jump there: an LR-grid pattern).
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.synthesis = RealPairSynthesis(opt.get('degradation')).to(self.device)
        continuity = (opt.get('train') or {}).get('continuity_opt')
        unknown = set(continuity or {}) - set(CONTINUITY_DEFAULTS)
        if unknown:
            raise KeyError(f'unknown continuity_opt options {sorted(unknown)}; known: {sorted(CONTINUITY_DEFAULTS)}')
        self.continuity = {**CONTINUITY_DEFAULTS, **continuity} if continuity is not None else None

    @torch.no_grad()
    def feed_data(self, data):
        if 'kernel1' not in data:
            super().feed_data(data)
            return
        pair = self.synthesis(*(data[key].to(self.device) for key in ('gt', 'kernel1', 'kernel2', 'sinc_kernel')))
        self.lq, self.coord, self.cell = pair['lq'], pair['coord'], pair['cell']
        self.gt_window, self.gt_usm_window = pair['gt'], pair['gt_usm']
        self.gt = channels_last(self.gt_usm_window)  # the pixel-loss target, [B, q * q, 3] as the predictions

    def predict_queries(self, losses):
        """The window's predictions [B, q * q, 3] (fp32) under autocast; adds `l_continuity` to `losses` when
        continuity is on (its probes decoded in the same call, with the window's cell)."""
        coord, cell = self.coord, self.cell
        if self.continuity:
            probes = switch_probes(coord.shape[0], self.continuity['num_probes'], *self.lq.shape[-2:],
                                   self.continuity['delta'], self.device)
            coord = torch.cat([coord, probes], 1)
            cell = torch.cat([cell, cell[:, :1].expand(-1, probes.shape[1], -1)], 1)
        with self.autocast():
            output = self.net_g(self.lq, coord, cell).float()
        self.output = output[:, :self.coord.shape[1]]
        if self.continuity:
            losses['l_continuity'] = self.continuity['loss_weight'] * switch_jump(output[:, self.coord.shape[1]:])
        return self.output

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        losses = OrderedDict()
        losses['l_pix'] = self.cri_pix(self.predict_queries(losses), self.gt)
        self.stop_if_not_finite(losses, current_iter)
        sum(losses.values()).backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(losses)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)


@MODEL_REGISTRY.register()
class RealCiaoSRGANModel(RealCiaoSRNetModel, SRGANModel):
    """Stage 2: L1 + VGG perceptual + GAN losses on the query window seen as an image [B, 3, q, q].

    The window is a contiguous block of output pixels, so the perceptual and GAN losses see a real,
    spatially coherent image in [0, 1] (the official code reshapes scattered queries instead).
    L1 and perceptual targets: sharpened GT; GAN real samples: plain GT. One discriminator step per
    generator step; continuity as stage 1. Discriminator, losses, optimisers and checkpoints (net_d) are SRGANModel's;
    the VGG19 weights come from local files only (`realsr.perceptual`), checked before the losses are built.
    """

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
        losses = OrderedDict()
        sr = as_image(self.predict_queries(losses), side)
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
