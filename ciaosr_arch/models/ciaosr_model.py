"""Training/validation of implicit arbitrary-scale SR nets (CiaoSR, LIIF) with BasicSR's trainer."""
import math
from contextlib import nullcontext

import torch
import torch.distributed as dist
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import generator_state_dict, read_checkpoint, without_non_local
from ..inference import super_resolve


@MODEL_REGISTRY.register()
class CiaoSRModel(SRModel):
    """SRModel for nets called as net(lq, coord, cell) -> RGB at sampled output pixels.

    Training: `pixel_opt` loss between predicted and true RGB of the sampled queries; optimiser,
    scheduler and EMA (`ema_decay`) exactly as BasicSR's SRModel; optional bf16 autocast
    (`train.autocast: bf16`). Validation: whole images through `super_resolve` (chunked queries,
    optional tiling `val.tile`, `val.tile_overlap`, `val.blend: uniform` = official test tiling);
    a metric with `crop_border: scale` shaves each dataset's own scale. Device-agnostic (CPU/CUDA),
    also under DistributedDataParallel with gloo on CPU.
    """

    def model_to_device(self, net):
        net = net.to(self.device)
        if self.opt['dist']:
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            return DistributedDataParallel(net, device_ids=device_ids,
                                           find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return super().model_to_device(net)

    def load_network(self, net, load_path, strict=True, param_key='params'):
        """BasicSR's load_network that also reads .safetensors and official mmediting checkpoints.

        Weights with a non-local branch load into a CiaoSR built without one (`non_local_attn: false`)
        through `without_non_local`: the same network with the non-local feature set to zero.
        """
        if str(load_path).endswith('.safetensors'):
            state, _ = read_checkpoint(load_path)
        else:
            obj = torch.load(load_path, map_location='cpu', weights_only=True)
            state = generator_state_dict(obj[param_key] if param_key in obj else obj, load_path)
        logger = get_root_logger()
        logger.info(f'Loading {net.__class__.__name__} from {load_path} [{param_key}]')
        bare = self.get_bare_model(net)
        if getattr(bare, 'cs_attn', False) is None and any(k.startswith('cs_attn.') for k in state):
            logger.info('The network has no non-local branch: its weights are dropped (exact with a zero non-local '
                        'feature)')
            state = without_non_local(state)
        bare.load_state_dict(state, strict=strict)

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
        l_pix.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict({'l_pix': l_pix})
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def test(self):
        """self.output = the whole SR image [B, 3, H, W]: the size of self.gt, else lq x the dataset's scale."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        val = self.opt.get('val') or {}
        size = self.gt.shape[-2:] if hasattr(self, 'gt') else None
        net.eval()
        self.output = super_resolve(net, self.lq, scale=None if size else self.val_scale, size=size,
                                    tile=val.get('tile', 0), tile_overlap=val.get('tile_overlap', 32),
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
