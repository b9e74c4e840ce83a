"""The CiaoSR network reproduces the official generator and loads its checkpoints."""
import io
import pickle
import zipfile

import cv2
import pytest
import torch
from safetensors.torch import save_file

from ciaosr_arch import CheckpointError, CiaoSR, load_model, super_resolve
from ciaosr_arch.checkpoint import infer_arch
from ciaosr_arch.files import save_safetensors

MEAN = torch.tensor((0.4488, 0.4371, 0.4040)).view(1, 1, 3)


def official_checkpoint(tmp_path, state_dict, prefix):
    """An mmediting-style checkpoint file: meta, prefixed generator weights, optimizer, GAN extras."""
    path = tmp_path / f'official_{prefix.strip(".")}.pth'
    state = {prefix + k: v for k, v in state_dict.items()}
    state['discriminator.conv_0.weight'] = torch.zeros(64, 3, 3, 3)
    state['step_counter'] = torch.tensor(7)
    if prefix == 'generator_ema.':  # the real-world restorer stores both; the EMA one must win
        state.update({'generator.' + k: torch.zeros_like(v) for k, v in state_dict.items()})
    torch.save({'meta': {'iter': 1000, 'config': 'model = dict(type="CiaoSR")'}, 'state_dict': state,
                'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-4, 'params': [0]}]}}, path)
    return path


@pytest.mark.parametrize('prefix', ['generator.', 'generator_ema.'])
def test_golden_fixture_through_official_checkpoint(golden, stressed_weights, tmp_path, prefix):
    net = load_model(official_checkpoint(tmp_path, golden['state_dict'], prefix))
    assert net.arch['encoder'] == 'edsr_baseline' and net.arch['non_local_attn']
    with torch.no_grad():
        for case in golden['cases'].values():
            pred = net(golden['lr'], case['coord'], case['cell'])
            torch.testing.assert_close(pred, case['pred'] + MEAN, atol=1e-5, rtol=0)
            out = super_resolve(net, golden['lr'], size=case['hr_size'])
            torch.testing.assert_close(out, case['pred_rgb'], atol=1e-5, rtol=0)
        for case in golden['extra_cases'].values():  # non-square 19x26 at x3.3, batch of two at x3
            pred = net(case['lr'], case['coord'], case['cell'])
            torch.testing.assert_close(pred, case['pred'] + MEAN, atol=1e-5, rtol=0)
        probe = golden['probe']
        torch.testing.assert_close(net(golden['lr'], probe['coord'], probe['cell']), probe['pred'] + MEAN,
                                   atol=1e-5, rtol=0)

    net = load_model(official_checkpoint(tmp_path, stressed_weights, prefix))
    stress = golden['stress']
    with torch.no_grad():
        for name, case in stress['cases'].items():
            torch.testing.assert_close(net(golden['lr'], case['coord'], case['cell']), case['pred'] + MEAN,
                                       atol=1e-4, rtol=0)
            # super_resolve decodes through the pair table (CiaoSR.pair_table), which the golden weights' logits are
            # too small to check: a wrong table row moves their output by < 1e-5, the stressed ones' by ~2e-3
            h, w = golden['cases'][name]['hr_size']
            expected = (case['pred'] + MEAN).clamp(0, 1).view(1, h, w, 3).permute(0, 3, 1, 2)
            torch.testing.assert_close(super_resolve(net, golden['lr'], size=(h, w)), expected, atol=1e-4, rtol=0)
        for case in stress['extra_cases'].values():
            torch.testing.assert_close(net(case['lr'], case['coord'], case['cell']), case['pred'] + MEAN,
                                       atol=1e-4, rtol=0)
        torch.testing.assert_close(net(golden['lr'], golden['probe']['coord'], golden['probe']['cell']),
                                   stress['probe_pred'] + MEAN, atol=1e-4, rtol=0)


@pytest.mark.parametrize('factor, size, band', [(2, (21, 17), 4096), (2, (21, 17), 40), (3, (19, 22), 4096),
                                                  (3, (7, 5), 6), (4, (9, 12), 12)])
def test_cross_scale_attention_equals_the_official_order(monkeypatch, factor, size, band):
    """The cross-scale attention's sums in this project's order (`down`'s taps first, `paste_sources`, bands of
    query rows) = the official conv2d, conv_transpose2d and strided conv (the speed benchmark's reference), output and
    gradients, in float64 so that only rounding can differ: factors 2 to 4, sizes that need the reflect padding,
    one band or several (one row each at `band` = 6 and 12), whose first row and column the official crop touches."""
    from ciaosr.benchmark_speed import official_cross_scale_attention
    from ciaosr_arch.archs import cross_scale_attention

    torch.manual_seed(0)
    attention = cross_scale_attention.CrossScaleAttention(8, [factor]).double()
    for param in attention.parameters():
        param.data.normal_(0, 0.5)  # large weights: a wrong or missing term shows far above rounding
    feat = torch.randn(2, 8, *size, dtype=torch.float64, requires_grad=True)
    official = official_cross_scale_attention(attention, feat)
    monkeypatch.setattr(cross_scale_attention, 'ATTENTION_BAND', band)
    ours = attention(feat)
    assert (ours - official).abs().max() < 1e-12 * official.abs().max()
    inputs = [feat, *attention.parameters()]
    for grad, expected in zip(torch.autograd.grad(ours.square().sum(), inputs),
                              torch.autograd.grad(official.square().sum(), inputs)):
        assert (grad - expected).abs().max() <= 1e-11 * expected.abs().max()
    with pytest.raises(ValueError, match='>= 2'):
        cross_scale_attention.CrossScaleAttention(8, [factor, 1])


def test_bank_stays_bf16_under_autocast():
    """Under bf16 autocast the bank's tables are bf16, as the convolutions and products that make them: one float32
    part (the cross-scale attention's bias added in float32) would turn the whole feature table to float32 and make
    the int8 decode 2.7 times slower (measured at 96 x 96 x4); and it stays within bf16 rounding of float32."""
    torch.manual_seed(0)
    net = CiaoSR(encoder_opt={'num_feat': 8, 'num_block': 1}, decoder_hidden=[16], key_hidden=[16],
                 value_hidden=[16]).eval()
    lr = torch.rand(1, 3, 13, 11)
    with torch.no_grad():
        exact = net.encode(lr, (52, 44))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bank = net.encode(lr, (52, 44))
    for name in ('values', 'key_proj', 'value_proj', 'pair_key', 'pair_bias'):
        assert bank[name].dtype == torch.bfloat16, name
        assert (bank[name].float() - exact[name]).abs().max() <= 0.03 * exact[name].abs().max(), name


def test_probe_intermediates(golden):
    """Encoder feature, non-local feature and the per-neighbour MLP inputs/outputs of the official code."""
    net = CiaoSR().eval()
    net.load_state_dict(golden['state_dict'])
    probe = golden['probe']
    with torch.no_grad():
        feat = net.encoder(golden['lr'] - net.rgb_mean)
        torch.testing.assert_close(feat, probe['feature'], atol=1e-5, rtol=0)
        torch.testing.assert_close(net.cs_attn(feat), probe['nonlocal_feature'], atol=1e-5, rtol=0)
        bank = net.encode(golden['lr'])
        index, extra = net.neighbours(probe['coord'], probe['cell'], 24, 24)
        unfolded = bank['unfolded'][0, index[0]].transpose(0, 1)  # [N, Q, 576]
        values = bank['values'][0, index[0]].transpose(0, 1)
        extra = extra[0].transpose(0, 1)
        key_in = torch.cat([unfolded, extra], -1)
        value_in = torch.cat([values, extra], -1)
        torch.testing.assert_close(key_in, probe['imnet_k_inputs'], atol=1e-5, rtol=0)
        torch.testing.assert_close(value_in, probe['imnet_v_inputs'], atol=1e-5, rtol=0)
        torch.testing.assert_close(net.imnet_k(key_in), probe['imnet_k_outputs'], atol=1e-5, rtol=0)
        torch.testing.assert_close(net.imnet_v(value_in), probe['imnet_v_outputs'], atol=1e-5, rtol=0)


def test_state_dict_layout_matches_official(golden):
    net = CiaoSR()
    assert list(net.state_dict()) == list(golden['state_dict'])
    assert sum(p.numel() for p in net.parameters()) == 2_649_030


@pytest.mark.parametrize('encoder, n_params, n_keys, checks', [
    ('rdn', 23_402_566, 338, {'rdbs.3.layers.7.conv.weight': (64, 512, 3, 3), 'rdbs.0.lff.weight': (64, 576, 1, 1),
                              'gff.0.weight': (64, 1024, 1, 1), 'imnet_v.layers.0.weight': (256, 644)}),
    ('swinir', 14_667_218, 584, {'layers.0.residual_group.blocks.1.attn_mask': (36, 64, 64),
                                 'layers.5.residual_group.blocks.0.attn.relative_position_index': (64, 64),
                                 'layers.2.residual_group.blocks.3.attn.relative_position_bias_table': (225, 6),
                                 'imnet_k.layers.0.weight': (256, 1624), 'imnet_v.layers.8.weight': (1800, 256),
                                 'cs_attn.conv_match_1.0.weight': (90, 180, 1, 1), 'patch_embed.norm.weight': (180,)}),
    ('rrdb', 18_014_086, 736, {'body.22.rdb3.conv5.weight': (64, 192, 3, 3), 'conv_body.weight': (64, 64, 3, 3),
                               'imnet_k.layers.0.weight': (256, 580)}),
])
def test_other_encoders_follow_the_spec(encoder, n_params, n_keys, checks):
    net = CiaoSR(encoder=encoder)
    state = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == n_params
    assert len(state) == n_keys
    assert not [k for k in state if k.startswith(('encoder.', 'upsample', 'conv_last', 'output', 'upscale'))]
    assert list(state)[:2] == ['imnet_q.layers.0.weight', 'imnet_q.layers.0.bias']
    for key, shape in checks.items():
        assert tuple(state[key].shape) == shape, key
    arch = infer_arch(state)
    assert arch['encoder'] == encoder
    assert set(CiaoSR(**{k: v for k, v in arch.items() if k != 'type'}).state_dict()) == set(state)


def test_swinir_on_sizes_off_the_window_grid():
    torch.manual_seed(0)
    net = CiaoSR(encoder='swinir', encoder_opt={'embed_dim': 12, 'depths': [2], 'num_heads': [2]}).eval()
    lr = torch.rand(1, 3, 13, 19)
    out = super_resolve(net, lr, 2.5)
    assert out.shape == (1, 3, 32, 48) and torch.isfinite(out).all()
    with torch.no_grad():  # the crop back to h x w: features of the padded input, cut at 13 x 19
        assert net.encoder(lr).shape[-2:] == (13, 19)


def test_safetensors_and_basicsr_checkpoints(golden, stressed_weights, tmp_path):
    net = CiaoSR()
    net.load_state_dict(golden['state_dict'])
    st = tmp_path / 'w.safetensors'
    save_safetensors(net, st, {'type': 'CiaoSR', 'encoder': 'edsr_baseline', 'local_size': 2})
    basicsr = tmp_path / 'net_g_100.pth'
    torch.save({'params': stressed_weights, 'params_ema': golden['state_dict']}, basicsr)
    case = golden['cases']['x4']
    for path in (st, basicsr):
        with torch.no_grad():
            pred = load_model(path)(golden['lr'], case['coord'], case['cell'])
        torch.testing.assert_close(pred, case['pred'] + MEAN, atol=1e-5, rtol=0)


class _Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_bad_checkpoints_fail_clearly_and_run_nothing(golden, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = {'generator.' + k: v for k, v in golden['state_dict'].items()}

    wrong = tmp_path / 'wrong_keys.pth'
    torch.save({'state_dict': {k.replace('imnet_v', 'imnet_x'): v for k, v in state.items()}}, wrong)
    with pytest.raises(CheckpointError, match=r'missing keys: imnet_v\.layers\.0\.weight.*unexpected keys: imnet_x'):
        load_model(wrong)

    good = tmp_path / 'good.pth'
    torch.save({'state_dict': state}, good)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match='cannot be loaded as plain weights'):
        load_model(truncated)

    evil = tmp_path / 'evil.pth'
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as zf:  # torch's zip layout, with a payload in data.pkl
        zf.writestr('archive/data.pkl', pickle.dumps({'state_dict': _Boom()}))
        zf.writestr('archive/version', '3\n')
    evil.write_bytes(buffer.getvalue())
    legacy = tmp_path / 'legacy.pth'
    legacy.write_bytes(pickle.dumps(_Boom()))
    for path in (evil, legacy):
        with pytest.raises(CheckpointError, match='cannot be loaded as plain weights'):
            load_model(path)
    assert not (tmp_path / 'PWNED').exists()

    bad_st = tmp_path / 'bad.safetensors'
    bad_st.write_bytes(b'\x00' * 10)
    with pytest.raises(CheckpointError, match=r'not a PyTorch \(\.pth\) or safetensors file \(it starts with'):
        load_model(bad_st)
    cut = tmp_path / 'cut.safetensors'
    save_file({'a': torch.zeros(100)}, cut)
    cut.write_bytes(cut.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match='not a readable safetensors'):
        load_model(cut)
    other = tmp_path / 'other.safetensors'
    save_file({'conv_first.weight': torch.zeros(64, 3, 3, 3), 'trunk.0.conv.weight': torch.zeros(32, 64, 3, 3)}, other)
    with pytest.raises(CheckpointError, match='not a CiaoSR or LIIF checkpoint: no encoder found'):
        load_model(other)
    trunk = tmp_path / 'esrgan_trunk.safetensors'  # an rrdb encoder without a head
    save_file({'conv_first.weight': torch.zeros(64, 3, 3, 3), 'body.0.rdb1.conv1.weight': torch.zeros(32, 64, 3, 3)},
              trunk)
    with pytest.raises(CheckpointError, match='not a CiaoSR or LIIF generator'):
        load_model(trunk)
    with pytest.raises(CheckpointError, match='not found'):
        load_model(tmp_path / 'nope.pth')


def test_rrdb_encoder_is_real_esrgans_trunk(shared_data):
    """Real-ESRGAN x4plus's weights load into the rrdb encoder (its up-sampler keys left out) and give BasicSR's
    RRDBNet trunk features: conv_body(body(conv_first(x))) + conv_first(x) on plain RGB."""
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from safetensors.torch import load_file

    state = load_file(str(shared_data.parent / 'models' / 'RealESRGAN_x4plus.safetensors'))
    reference = RRDBNet(3, 3).eval()
    reference.load_state_dict(state)
    net = CiaoSR(encoder='rrdb', non_local_attn=False).eval()
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert sorted(unexpected) == sorted(k for k in state if k.startswith(('conv_up', 'conv_hr', 'conv_last')))
    assert all(k.startswith('imnet_') for k in missing)
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        feat = reference.conv_first(lr)
        trunk = reference.conv_body(reference.body(feat)) + feat
        assert torch.allclose(net.encoder(lr - MEAN.view(1, 3, 1, 1)), trunk, atol=1e-5)
    assert infer_arch(net.state_dict())['encoder_opt'] == {'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32}


def test_rrdb_with_upsampler_starts_as_real_esrgan(shared_data):
    """With `upsampler=True` Real-ESRGAN x4plus loads whole (trunk and x4 tail), the decoder's output layer starts at
    zero, so at x4 the network gives RRDBNet's own output (its pixels are the query centres); elsewhere it gives
    that output resampled as OpenCV's Lanczos-4 resize does (Real-ESRGAN's `--outscale`); infer_arch finds the tail.
    A head with weights adds its residual over it."""
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from safetensors.torch import load_file

    state = load_file(str(shared_data.parent / 'models' / 'RealESRGAN_x4plus.safetensors'))
    reference = RRDBNet(3, 3).eval()
    reference.load_state_dict(state)
    net = CiaoSR(encoder='rrdb', encoder_opt={'upsampler': True}, non_local_attn=False).eval()
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith('imnet_') for k in missing)
    assert net.has_base_image and not CiaoSR(encoder='rrdb', non_local_attn=False).has_base_image
    torch.manual_seed(0)
    lr = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        base = reference(lr)
        assert torch.allclose(super_resolve(net, lr, scale=4), base.clamp(0, 1), atol=1e-5)
        out = super_resolve(net, lr, size=(22, 27))
        expected = cv2.resize(base[0].permute(1, 2, 0).numpy(), (27, 22), interpolation=cv2.INTER_LANCZOS4)
        assert torch.allclose(out[0].permute(1, 2, 0), torch.from_numpy(expected).clamp(0, 1), atol=1e-5)
        net.imnet_q.layers[-1].bias.fill_(0.01)
        assert torch.allclose(super_resolve(net, lr, scale=4), (base + 0.01).clamp(0, 1), atol=1e-5)
    assert infer_arch(net.state_dict())['encoder_opt'] == {'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32,
                                                           'upsampler': True}


@pytest.mark.parametrize('image_size, size', [((13, 17), (13, 17)), ((13, 17), (26, 34)), ((13, 17), (40, 37)),
                                              ((13, 17), (7, 9)), ((1, 1), (4, 4)), ((3, 2), (7, 5)),
                                              ((1, 5), (3, 11))])
def test_lanczos_sampling_is_opencvs_resize(image_size, size):
    """`sample_lanczos` on an output grid = OpenCV's INTER_LANCZOS4 resize (borders included), and a pixel's own value
    at its centre."""
    from ciaosr_arch.archs.coords import lanczos_source, make_coord, sample_lanczos

    torch.manual_seed(0)
    image = torch.rand(2, 3, *image_size)
    out = sample_lanczos(lanczos_source(image), make_coord(size)[None].expand(2, -1, -1)).view(2, *size, 3)
    for i in range(2):
        expected = cv2.resize(image[i].permute(1, 2, 0).numpy(), size[::-1], interpolation=cv2.INTER_LANCZOS4)
        assert torch.allclose(out[i], torch.from_numpy(expected), atol=1e-5)
    if size == image_size:
        assert torch.allclose(out, image.permute(0, 2, 3, 1), atol=1e-5)
