"""Training/validation of implicit arbitrary-scale SR nets (CiaoSR, LIIF) with BasicSR's trainer."""
import math
import time
from contextlib import nullcontext
from os import path as osp

import torch
import torch.distributed as dist
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn.parallel import DataParallel, DistributedDataParallel

from ..archs.ciaosr_arch import without_non_local
from ..checkpoint import check_values, match_state, read_checkpoint
from ..engine import super_resolve
from ..errors import listing
from ..files import atomic_file
from ..options import NUMBER, OneOf, Open
from ..shipped import resolve_weights


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; training stops before that step changes the weights."""


def under_autocast(module, device_type, dtype):
    """`module` (a callable) called under autocast to `dtype` on `device_type` ('cuda', 'cpu')."""
    def call(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            return module(*args, **kwargs)
    return call


class AutocastDataParallel(DataParallel):
    """BasicSR's DataParallel (several GPUs without torchrun) whose replicas run under the caller's autocast dtype.

    torch's `parallel_apply` enters autocast again in each replica's thread with only `enabled` set, so the dtype is
    that thread's default, float16 on CUDA: a `train.autocast: bf16` recipe would have trained in float16, without a
    gradient scaler (torch/nn/parallel/parallel_apply.py, torch 2.14)."""

    def parallel_apply(self, replicas, inputs, kwargs):
        device_type = self.src_device_obj.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            replicas = [under_autocast(replica, device_type, dtype) for replica in replicas]
        return super().parallel_apply(replicas, inputs, kwargs)


@MODEL_REGISTRY.register()
class CiaoSRModel(SRModel):
    """SRModel for nets called as net(lq, coord, cell) -> RGB at sampled output pixels.

    Training: `pixel_opt` loss between predicted and true RGB of the sampled queries; optimiser,
    scheduler and EMA (`ema_decay`) exactly as BasicSR's SRModel; optional bf16 autocast
    (`train.autocast: bf16`) and a frozen encoder (`train.freeze_encoder`). Validation: whole images
    through `super_resolve` (chunked queries, optional tiling `val.tile`, `val.tile_overlap`, `val.blend: uniform` =
    official test tiling); a metric with `crop_border: scale` shaves each dataset's own scale.
    Device-agnostic (CPU/CUDA), also under DistributedDataParallel with gloo on CPU.

    OPTIONS: the `train:` and `val:` keys that this model and BasicSR's trainer read, with their kinds
    (checked by `ciaosr_arch.options` before training starts).
    """

    coord: torch.Tensor  # [B, Q, 2] of a training batch (`feed_data`), as `cell`
    cell: torch.Tensor
    cri_pix: torch.nn.Module  # the pixel loss (SRModel's `init_training_settings`: `train.pixel_opt`)

    OPTIONS = {
        'train': {'total_iter': NUMBER, 'warmup_iter': NUMBER, 'ema_decay': NUMBER, 'autocast': OneOf(('bf16',)),
                  'freeze_encoder': bool, 'optim_g': Open(type=str, lr=NUMBER), 'scheduler': Open(type=str),
                  'pixel_opt': Open(type=str, loss_weight=NUMBER)},
        'val': {'val_freq': NUMBER, 'save_img': bool, 'suffix': (str, type(None)), 'pbar': bool, 'metrics': dict,
                'tile': int, 'tile_overlap': int, 'blend': OneOf(('smooth', 'uniform'))},
    }

    def model_to_device(self, net):
        """The net on the model's device, wrapped for data-parallel training as BasicSR does (its DataParallel as
        `AutocastDataParallel`). With `train.freeze_encoder: true` the generator's encoder gets no gradients and its
        weights stay as loaded (a pretrained trunk such as Real-ESRGAN's: only the implicit head trains, and the
        encoder's forward pass records nothing for the backward pass); frozen here, before DistributedDataParallel
        takes note of the parameters that need gradients (frozen after it, every step's gradient reduction waited for
        the encoder's, and the second step failed)."""
        net = net.to(self.device)
        if self.is_train and net is getattr(self, 'net_g', None) and self.opt['train'].get('freeze_encoder'):
            net.encoder.requires_grad_(False)
        if self.opt['dist']:
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            return DistributedDataParallel(net, device_ids=device_ids,
                                           find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return AutocastDataParallel(net) if self.opt['num_gpu'] > 1 else net

    def load_network(self, net, load_path, strict=True, param_key='params'):
        """BasicSR's load_network that also reads .safetensors and official mmediting checkpoints, and takes the
        name of a shipped model (`pretrain_network_g: default`; `shipped.resolve_weights`).

        Weights with a non-local branch load into a CiaoSR built without one (`non_local_attn: false`)
        through `without_non_local`: the same network with the non-local feature set to zero. The file's
        keys and shapes must match the network (`match_state`; keys only when `strict`) and its weights be
        finite floats (`check_values`); otherwise CheckpointError names the file and the tensors. Without `strict`
        (strict_load_g / _d: false) a warning says how many of the network's tensors the file gave, and which not;
        the EMA generator takes those from the generator.
        """
        load_path = str(resolve_weights(load_path))
        state, _ = read_checkpoint(load_path, param_key, partial=True)
        logger = get_root_logger()
        logger.info(f'Loading {net.__class__.__name__} from {load_path} [{param_key}]')
        bare = self.get_bare_model(net)
        if getattr(bare, 'cs_attn', False) is None and any(k.startswith('cs_attn.') for k in state):
            logger.info('The network has no non-local branch: its weights are dropped (exact with a zero non-local '
                        'feature)')
            state = without_non_local(state)
        expected = bare.state_dict()
        match_state(state, expected, load_path, type(bare).__name__, strict)
        check_values(state, expected, load_path)
        bare.load_state_dict(state, strict=strict)
        missing, unused = [k for k in expected if k not in state], [k for k in state if k not in expected]
        if missing and net is getattr(self, 'net_g_ema', None):  # BasicSR loads the EMA from the file too: what the
            # file lacks starts as the generator's (as the EMA of a net trained from scratch does), not at another init
            generator = self.get_bare_model(self.net_g).state_dict()
            bare.load_state_dict({k: generator[k] for k in missing}, strict=False)
        if missing or unused:  # only without strict: match_state refuses them otherwise
            logger.warning(f'{load_path} gave {len(expected) - len(missing)} of the {len(expected)} tensors of '
                           f'{type(bare).__name__} (loaded with strict_load_* false); not in the file: '
                           f'{listing(missing)}; in the file but not in the network: {listing(unused)}')

    def feed_data(self, data):
        """lq [B, 3, h, w]; training adds gt RGB [B, Q, 3], coord and cell [B, Q, 2]; validation gt images."""
        self.lq = data['lq'].to(self.device)
        for key in ('gt', 'coord', 'cell'):
            if key in data:
                setattr(self, key, data[key].to(self.device))
            elif hasattr(self, key):  # no stale training targets during validation without GT
                delattr(self, key)

    def autocast(self):
        """bf16 autocast on the model's device when `train.autocast: bf16`, else nothing."""
        if self.opt.get('train', {}).get('autocast') == 'bf16':
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        with self.autocast():
            self.output = self.net_g(self.lq, self.coord, self.cell)
        l_pix = self.cri_pix(self.output.float(), self.gt)
        self.stop_if_not_finite({'l_pix': l_pix}, current_iter)
        l_pix.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict({'l_pix': l_pix})
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def stop_if_not_finite(self, losses, current_iter):
        """Raise TrainingDiverged naming the iteration and every NaN/Inf loss of `losses` ({name: scalar tensor}).

        Call it before the backward pass: the step that produced the loss then changes no weights, and the last
        saved checkpoint is the one to resume from (e.g. with a lower learning rate). One device sync.
        """
        values = torch.stack([loss.detach().float().reshape(()) for loss in losses.values()])
        if torch.isfinite(values).all():
            return
        bad = ', '.join(f'{name} = {value:.4g}' for name, value in zip(losses, values.tolist())
                        if not math.isfinite(value))
        raise TrainingDiverged(f'iteration {current_iter}: non-finite loss ({bad}); training stopped before this '
                               f'step changed the weights')

    def test(self):
        """self.output = the whole SR image [B, 3, H, W]: the size of self.gt, else lq x the dataset's scale."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        val = self.opt.get('val') or {}
        size = self.gt.shape[-2:] if hasattr(self, 'gt') else None
        net.eval()
        self.output = super_resolve(net, self.lq, scale=None if size else self.val_scale, size=size,
                                    tile=val.get('tile', 0), tile_overlap=val.get('tile_overlap'),
                                    blend=val.get('blend', 'smooth'))
        if not hasattr(self, 'net_g_ema'):
            self.net_g.train()

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """BasicSR's validation loop at the dataset's `scale`; `crop_border: scale` shaves that scale."""
        self.val_scale = dataloader.dataset.opt['scale']
        metrics = (self.opt.get('val') or {}).get('metrics') or {}
        per_scale = [m for m in metrics.values() if m.get('crop_border') == 'scale']
        for metric in per_scale:
            metric['crop_border'] = math.ceil(self.val_scale)
        try:
            super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            for metric in per_scale:
                metric['crop_border'] = 'scale'

    def save(self, epoch, current_iter):
        if self.opt['dist']:
            self.check_ranks_agree()
        super().save(epoch, current_iter)

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        """BasicSR's save_network, written atomically: `models/{net_label}_{iter}.pth` ('latest' for iter -1) holds
        {param_key: bare state_dict on the CPU} per net (net and param_key: one each, or equal-length lists)."""
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        checkpoint = {key: {k.removeprefix('module.'): v.cpu() for k, v in self.get_bare_model(n).state_dict().items()}
                      for n, key in zip(nets, keys, strict=True)}
        name = f'{net_label}_{"latest" if current_iter == -1 else current_iter}.pth'
        self.save_atomically(checkpoint, osp.join(self.opt['path']['models'], name))

    @master_only
    def save_training_state(self, epoch, current_iter):
        """BasicSR's save_training_state, written atomically: `training_states/{iter}.state` (nothing for iter -1)."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        self.save_atomically(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    @staticmethod
    def save_atomically(obj, path, tries=3):
        """torch.save(obj) to `path` through `atomic_file` (a kill mid-save leaves the old file or none, never a
        truncated one); retried `tries` times 1 s apart like BasicSR, then OSError naming the file."""
        for attempt in range(1, tries + 1):
            try:
                with atomic_file(path) as file:
                    torch.save(obj, file)
                return
            except OSError as err:
                if attempt == tries:
                    raise OSError(f'cannot save {path}: {err}') from err
                get_root_logger().warning(f'cannot save {path} ({err}); trying again ({attempt}/{tries})')
                time.sleep(1)

    @torch.no_grad()
    def check_ranks_agree(self):
        """All-gather a checksum of the generator weights; raise if data-parallel ranks diverged."""
        params = [p.detach().double().sum() for p in self.get_bare_model(self.net_g).parameters()]
        checksum = torch.stack(params).sum().view(1).to(self.device)
        gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, checksum)
        if any(not torch.equal(g, checksum) for g in gathered):
            raise RuntimeError(f'data-parallel ranks diverged: weight checksums {[g.item() for g in gathered]}')
        if dist.get_rank() == 0:
            get_root_logger().info(f'{len(gathered)} ranks agree: weight checksum {checksum.item():.10g}')
