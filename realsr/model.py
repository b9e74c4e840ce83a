"""Two-stage real-world training of CiaoSR (official real-world configs) on pairs synthesised on the model's device."""
import math
from collections import OrderedDict

import torch
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from ciaosr_arch.archs.coords import switch_probes
from ciaosr_arch.archs.implicit_base import channels_last
from ciaosr_arch.models import CiaoSRModel
from ciaosr_arch.options import NUMBER, Open, OptionsError, check_section, kinds_of

from .data import GT_SIZE
from .degradations import SYNTHESIS_DEFAULTS, RealPairSynthesis
from .perceptual import build_perceptual_loss

CONTINUITY_DEFAULTS = {'loss_weight': 1.0, 'num_probes': 512, 'delta': 0.05}
GRID_DEFAULTS = {'loss_weight': 1.0, 'phases': 8}
UNET_DISCRIMINATORS = ('UNetDiscriminatorSN', 'UNetDiscriminatorSN_basicsr')  # BasicSR's, as registered


def as_image(rgb, side):
    """Predictions of a side x side query window [B, side^2, 3] -> image [B, 3, side, side]."""
    return rgb.transpose(1, 2).reshape(rgb.shape[0], 3, side, side)


def switch_jump(rgb):
    """Mean |jump| of predictions at `switch_probes` quadruples [B, 4N, 3] (queries at -3, -1, 1, 3 x delta across a
    switch line): the step across the line minus the mean of the steps beside it, so a smooth output (any
    gradient, even a curved one to first order) scores ~0 and a discontinuity at the line scores its height."""
    r0, r1, r2, r3 = rgb.view(rgb.shape[0], -1, 4, rgb.shape[-1]).unbind(2)
    return ((r2 - r1) - ((r1 - r0) + (r3 - r2)) / 2).abs().mean()


def grid_phase_profile(img, rows, cols, phases):
    """The LR-grid phase profile of query windows (the training form of `ciaosr.grid_index`): [phases], mean 1.

    img [B, C, q, q]: a window; rows, cols [B, q]: its pixel centres in LR pixels. Each step between neighbouring
    pixels, |gray[i, j + 1] - gray[i, j]| (gray: the channel mean) and likewise down the rows, goes to the phase
    bin of its midpoint within its LR pixel (frac(x) * phases); the profile is the mean step per bin, normalised
    to mean 1 over the bins that got steps (empty bins, e.g. at scales near 1, are 0 and left out of the mean).
    """
    gray = img.mean(1)
    bins = [((((p[:, 1:] + p[:, :-1]) / 2) % 1) * phases).long().clamp_(max=phases - 1) for p in (cols, rows)]
    across, down = (gray[:, :, 1:] - gray[:, :, :-1]).abs(), (gray[:, 1:] - gray[:, :-1]).abs()
    index = torch.cat([bins[0][:, None, :].expand_as(across).flatten(), bins[1][:, :, None].expand_as(down).flatten()])
    steps = torch.cat([across.flatten(), down.flatten()])
    sums = steps.new_zeros(phases).index_add_(0, index, steps)
    counts = steps.new_zeros(phases).index_add_(0, index, torch.ones_like(steps))
    means = sums / counts.clamp(min=1)
    return means / (means.sum() / (counts > 0).sum()).clamp(min=1e-8)


def grid_loss(sr, gt, coord, lq_size, phases):
    """Mean |difference| between the LR-grid phase profiles of predicted and true windows [B, 3, q, q] (`coord`
    [B, q * q, 2]: the window's queries, row-major, in the [-1, 1] frame of an LR crop of side `lq_size`).

    Detail locked to the LR grid (terraces flat at LR pixel centres and steep at their edges, a staircase) bends
    the predicted profile; natural detail has no preferred phase, so the true window's profile is ~flat.
    """
    b, q = sr.shape[0], sr.shape[-1]
    pos = (coord.view(b, q, q, 2) + 1) * (lq_size / 2)
    rows, cols = pos[:, :, 0, 0], pos[:, 0, :, 1]
    return (grid_phase_profile(sr, rows, cols, phases) - grid_phase_profile(gt, rows, cols, phases)).abs().mean()


def term_options(opt, key, defaults):
    """The options of an optional loss term `train.<key>` completed with `defaults`; None when the term is off.
    OptionsError names an unknown option or a value of the wrong kind."""
    given = (opt.get('train') or {}).get(key)
    if given is None:
        return None
    check_section(f'train.{key}', given, kinds_of(defaults))
    return {**defaults, **given}


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
    free (a GAN stage learns to sharpen with a jump there: an LR-grid pattern). LR-grid term (`train.grid_opt:
    {loss_weight, phases}`, defaults GRID_DEFAULTS; also this project's): `grid_loss` between the predicted and the
    true window (`l_grid`): the continuous staircase (flat at LR pixel centres, steep at their edges) that the
    continuity term cannot see, and that L1 and GAN training both drift into.
    """

    OPTIONS = {**CiaoSRModel.OPTIONS, 'degradation': kinds_of(SYNTHESIS_DEFAULTS),
               'train': {**CiaoSRModel.OPTIONS['train'], 'continuity_opt': kinds_of(CONTINUITY_DEFAULTS),
                         'grid_opt': kinds_of(GRID_DEFAULTS)}}

    @classmethod
    def check_values(cls, opt):
        """OptionsError (one line) for `degradation:` values that cannot work together, with the training crops:
        scale_range must have 1 <= min <= max, lq_size >= query_window >= 1, and the training dataset's GT crops
        must give an LR crop at the largest scale (round(gt_size / max) >= lq_size). Called by
        `ciaosr_arch.options.check_options` before anything is created."""
        synthesis = {**SYNTHESIS_DEFAULTS, **(opt.get('degradation') or {})}
        scales = synthesis['scale_range']
        if len(scales) != 2 or not all(isinstance(s, (int, float)) and math.isfinite(s) for s in scales):
            raise OptionsError(f'degradation.scale_range: must be two numbers [min, max], got {scales}')
        low, high = scales
        if not 1 <= low <= high:
            raise OptionsError(f'degradation.scale_range: must have 1 <= min <= max (the LR is the GT down-sized), '
                               f'got {[low, high]}')
        lq_size, window = synthesis['lq_size'], synthesis['query_window']
        if not 1 <= window <= lq_size:
            raise OptionsError(f'degradation: must have lq_size >= query_window >= 1, got {lq_size} and {window}')
        train = (opt.get('datasets') or {}).get('train') or {}
        gt_size = train.get('gt_size', GT_SIZE)
        if train.get('type') == 'RealWorldSRDataset' and round(gt_size / high) < lq_size:
            raise OptionsError(f'datasets.train.gt_size: {gt_size} px GT crops give {round(gt_size / high)} px LR at '
                               f'x{high:g}, less than degradation.lq_size ({lq_size}): use at least '
                               f'{math.ceil(lq_size * high)}')

    def __init__(self, opt):
        super().__init__(opt)
        self.synthesis = RealPairSynthesis(opt.get('degradation')).to(self.device)
        self.continuity = term_options(opt, 'continuity_opt', CONTINUITY_DEFAULTS)
        self.grid = term_options(opt, 'grid_opt', GRID_DEFAULTS)

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
        continuity is on (its probes decoded in the same call, with the window's cell) and `l_grid` when the LR-grid
        term is on."""
        coord, cell = self.coord, self.cell
        if self.continuity:
            lq_h, lq_w = self.lq.shape[-2:]
            probes = switch_probes(coord.shape[0], self.continuity['num_probes'], lq_h, lq_w,
                                   self.continuity['delta'], self.device)
            coord = torch.cat([coord, probes], 1)
            cell = torch.cat([cell, cell[:, :1].expand(-1, probes.shape[1], -1)], 1)
        with self.autocast():
            output = self.net_g(self.lq, coord, cell).float()
        self.output = output[:, :self.coord.shape[1]]
        if self.continuity:
            losses['l_continuity'] = self.continuity['loss_weight'] * switch_jump(output[:, self.coord.shape[1]:])
        if self.grid:
            side = self.gt_window.shape[-1]
            losses['l_grid'] = self.grid['loss_weight'] * grid_loss(
                as_image(self.output, side), self.gt_window, self.coord, self.lq.shape[-1], self.grid['phases'])
        return self.output

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        losses = OrderedDict()
        losses['l_pix'] = self.cri_pix(self.predict_queries(losses), self.gt)
        self.stop_if_not_finite(losses, current_iter)
        sum(losses.values()).backward()  # pyright: ignore[reportAttributeAccessIssue]  (a sum of tensors, which
        # typeshed's sum() types as possibly its int start)
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(losses)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)


@MODEL_REGISTRY.register()
class RealCiaoSRGANModel(RealCiaoSRNetModel, SRGANModel):
    """Stage 2: L1 + VGG perceptual + GAN losses on the query window seen as an image [B, 3, q, q].

    The window is a contiguous block of output pixels, so the perceptual and GAN losses see a real,
    spatially coherent image in [0, 1] (the official code reshapes scattered queries instead).
    L1 and perceptual targets: sharpened GT; GAN real samples: plain GT. A discriminator step every iteration, a
    generator step every `net_d_iters` once past `net_d_init_iters` (SRGANModel's; defaults: every one); continuity
    as stage 1. Discriminator, losses, optimisers and checkpoints (net_d) are SRGANModel's;
    the VGG19 weights come from local files only (`realsr.perceptual`), checked before the losses are built.
    """

    OPTIONS = {**RealCiaoSRNetModel.OPTIONS,
               'train': {**RealCiaoSRNetModel.OPTIONS['train'], 'optim_d': Open(type=str, lr=NUMBER),
                         'perceptual_opt': Open(type=str, perceptual_weight=NUMBER),
                         'gan_opt': Open(type=str, loss_weight=NUMBER), 'net_d_iters': NUMBER,
                         'net_d_init_iters': NUMBER}}

    @classmethod
    def check_values(cls, opt):
        """`RealCiaoSRNetModel.check_values`, net_d_iters >= 1 and net_d_init_iters >= 0 (whole numbers), and with the
        U-Net discriminator (three stride-2 levels and their skip connections), a query window that is a multiple of
        8 (RuntimeError at the first step otherwise)."""
        super().check_values(opt)
        train = opt.get('train') or {}
        for key, least in (('net_d_iters', 1), ('net_d_init_iters', 0)):
            if not (isinstance(train.get(key, least), int) and train.get(key, least) >= least):
                raise OptionsError(f'train.{key}: must be a whole number >= {least}, got {train[key]!r}')
        window = {**SYNTHESIS_DEFAULTS, **(opt.get('degradation') or {})}['query_window']
        if (opt.get('network_d') or {}).get('type') in UNET_DISCRIMINATORS and window % 8:
            raise OptionsError(f'degradation.query_window: the U-Net discriminator needs a multiple of 8, got {window}')

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
        """A generator step (every `net_d_iters` iterations once past `net_d_init_iters`, as SRGANModel: defaults 1
        and 0, every iteration), then a discriminator step on the window's prediction and the plain GT window. Every
        loss of both is checked before either steps (`stop_if_not_finite`), so a non-finite one changes no weights."""
        side = self.gt_window.shape[-1]
        for p in self.net_d.parameters():
            p.requires_grad = False
        self.optimizer_g.zero_grad()
        losses = OrderedDict()
        generator_step = current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters
        with torch.set_grad_enabled(generator_step):
            sr = as_image(self.predict_queries(losses), side)
        if generator_step:
            if self.cri_pix:
                losses['l_g_pix'] = self.cri_pix(sr, self.gt_usm_window)
            if self.cri_perceptual:
                percep, style = self.cri_perceptual(sr, self.gt_usm_window)  # either is None at weight 0
                if percep is not None:
                    losses['l_g_percep'] = percep
                if style is not None:
                    losses['l_g_style'] = style
            losses['l_g_gan'] = self.cri_gan(self.net_d(sr), True, is_disc=False)  # (no gradient into D: frozen)
        else:
            losses.clear()  # the continuity and grid terms of a step not taken
        generator_losses = list(losses.values())

        for p in self.net_d.parameters():
            p.requires_grad = True
        real_pred, fake_pred = self.net_d(self.gt_window), self.net_d(sr.detach())
        losses['l_d_real'] = self.cri_gan(real_pred, True, is_disc=True)
        losses['l_d_fake'] = self.cri_gan(fake_pred, False, is_disc=True)
        self.stop_if_not_finite(losses, current_iter)
        if generator_losses:
            sum(generator_losses).backward()  # pyright: ignore[reportAttributeAccessIssue]  (a sum of tensors)
            self.optimizer_g.step()
        self.optimizer_d.zero_grad()
        (losses['l_d_real'] + losses['l_d_fake']).backward()
        self.optimizer_d.step()
        losses['out_d_real'], losses['out_d_fake'] = real_pred.detach().mean(), fake_pred.detach().mean()

        self.log_dict = self.reduce_loss_dict(losses)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
