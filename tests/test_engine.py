"""The engine (ciaosr_arch/engine.py): whole-image inference at any size and scale, its argument checks, query
chunking, LR-space tiling and blending, and the memory plan."""
import numpy as np
import pytest
import torch

from ciaosr_arch import LIIF, CiaoSR, engine, load_model, super_resolve


def test_super_resolve_refuses_bad_arguments_in_one_error(tiny_model):
    """14-api-unchecked-arguments: chunk < 0 returned an uninitialised buffer, a negative overlap NaN, tiles under 8
    pixels a 17 dB image, and wrong inputs raw PyTorch errors; a NumPy scale was refused."""
    net = load_model(tiny_model)
    lr = torch.rand(1, 3, 12, 14, generator=torch.Generator().manual_seed(0))
    cases = [({'chunk': -1}, ValueError, 'chunk must be None'), ({'chunk': 0}, ValueError, 'chunk must be None'),
             ({'chunk': 2.5}, TypeError, 'chunk must be an integer'),
             ({'tile': 8, 'tile_overlap': -3}, ValueError, 'tile_overlap must be at least 0'),
             ({'tile': -5}, ValueError, r'tile must be 0 \(no tiling\) or at least 8'),
             ({'tile': 1}, ValueError, r'tile must be 0 \(no tiling\) or at least 8'),
             ({'tile': True}, TypeError, 'tile must be an integer'),
             ({'progress': 'yes'}, TypeError, 'progress must be a function'),
             ({'scale': '2'}, TypeError, 'scale must be a number'), ({'scale': -2}, ValueError, 'finite number > 0'),
             ({'size': (24, 28.5)}, TypeError, 'size must be two integers'),
             ({'size': (0, 28)}, ValueError, 'size must be two positive integers'),
             ({'size': 48}, TypeError, r'size must be two integers \(H, W\), got 48'),
             ({'lr': lr.numpy()}, TypeError, 'lr must be a torch.Tensor'),
             ({'lr': (lr * 255).to(torch.uint8)}, TypeError, r'lr must hold floats in \[0, 1\], got torch.uint8'),
             ({'lr': lr.double()}, TypeError, 'lr is torch.float64 but the network\'s weights are torch.float32'),
             ({'lr': torch.rand(1, 4, 12, 14)}, ValueError, r'lr must be RGB images \[B, 3, h, w\]'),
             ({'lr': lr[0]}, ValueError, r'add the batch dimension'),
             ({'lr': lr[:, :, :0]}, ValueError, r'got shape \(1, 3, 0, 14\)')]
    for change, error, message in cases:
        arguments = {'lr': lr, 'scale': 2, **change}
        if 'size' in change:
            del arguments['scale']
        with pytest.raises(error, match=message):
            super_resolve(net, **arguments)
    assert super_resolve(net, lr, np.float32(2), chunk=np.int64(100)).shape == (1, 3, 24, 28)

def tiny_nets():
    """Small untrained nets of every kind whose smallest input side differs (seeded): name -> net."""
    torch.manual_seed(0)
    mlp = {'decoder_hidden': [16], 'key_hidden': [16], 'value_hidden': [16]}
    return {'ciaosr': CiaoSR(encoder_opt={'num_feat': 8, 'num_block': 1}, **mlp),
            'ciaosr_x4_attention': CiaoSR(encoder_opt={'num_feat': 8, 'num_block': 1}, multi_scale=[4], **mlp),
            'liif': LIIF(encoder_opt={'num_feat': 8, 'num_block': 1}, hidden=[16]),
            'swinir': CiaoSR(encoder='swinir', encoder_opt={'embed_dim': 12, 'depths': [1], 'num_heads': [2]}, **mlp)}

def test_any_size_upscales_at_any_scale():
    """1x1, 1xN, Nx1 and 2x2..3x3 images at integer and odd scales, whole and tiled, with every encoder."""
    expected_min_side = {'ciaosr': 2, 'ciaosr_x4_attention': 3, 'liif': 1, 'swinir': 5}
    for name, net in tiny_nets().items():
        net.eval()
        assert net.min_input_side == expected_min_side[name]
        for h, w in ((1, 1), (1, 9), (9, 1), (2, 2), (3, 3), (2, 40)):
            lr = torch.rand(1, 3, h, w)
            for scale in (1.5, 3, 7.3):
                out = super_resolve(net, lr, scale)
                assert out.shape == (1, 3, max(1, round(h * scale)), max(1, round(w * scale)))
                assert torch.isfinite(out).all()
            tiled = super_resolve(net, lr, 2, tile=8, tile_overlap=2)
            assert tiled.shape == (1, 3, 2 * h, 2 * w) and torch.isfinite(tiled).all()

@pytest.mark.parametrize('tile, overlap, encodes', [(32, None, 9), (16, None, 25), (32, 8, 9), (32, 0, 4)])
def test_the_default_overlap_follows_the_tile(tiny_model, monkeypatch, tile, overlap, encodes):
    """A review: the default overlap was 32 whatever the tile (capped to the tile less 1), so tiles of 32 or less
    started every pixel: 1089 encodes of a 64 x 64 image in tiles of 32, 11.8 s; now a quarter of the tile, as the
    tools (`default_overlap`)."""
    net, calls = load_model(tiny_model), []
    encode = net.encode
    monkeypatch.setattr(net, 'encode', lambda *args: calls.append(1) or encode(*args))
    lr = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    super_resolve(net, lr, 2, tile=tile, **({} if overlap is None else {'tile_overlap': overlap}))
    assert len(calls) == encodes


def test_networks_in_other_float_dtypes_give_the_float32_output(psnr):
    """A network converted with .to(dtype) and its input in that dtype: bfloat16, float16 and float64, every head and
    skip (bilinear LR, the Lanczos-sampled base image of `rrdb` with `upsampler`). The float32 coordinates met the
    other dtype's features in grid_sample and the MLPs' first layer (a PyTorch dtype error)."""
    nets = tiny_nets()
    nets['rrdb_base'] = CiaoSR(encoder='rrdb', encoder_opt={'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4,
                                                            'upsampler': True}, non_local_attn=False,
                               decoder_hidden=[16], key_hidden=[16], value_hidden=[16])
    lr = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    for name, net in nets.items():
        reference = super_resolve(net.eval(), lr, 2.5)
        for dtype, least in ((torch.float64, 100), (torch.float16, 50), (torch.bfloat16, 35)):
            out = super_resolve(net.to(dtype), lr.to(dtype), 2.5)
            assert out.dtype == dtype and psnr(out.float(), reference) > least, (name, dtype)
            net.float()


def test_small_images_are_padded_and_decoded_on_their_own_area():
    """A 1-row image gives exactly the top half of the same row repeated twice at twice the output height:
    replicate padding, with the output pixel centres placed on the image itself."""
    net = tiny_nets()['ciaosr'].eval()
    lr = torch.rand(1, 3, 1, 9)
    one_row = super_resolve(net, lr, size=(3, 22))
    two_rows = super_resolve(net, lr.expand(-1, -1, 2, -1), size=(6, 22))
    torch.testing.assert_close(one_row, two_rows[..., :3, :], atol=1e-6, rtol=0)
    dot = torch.rand(1, 3, 1, 1)
    torch.testing.assert_close(super_resolve(net, dot, size=(3, 5)),
                               super_resolve(net, dot.expand(-1, -1, 2, 2), size=(6, 10))[..., :3, :5],
                               atol=1e-6, rtol=0)

def test_chunking_changes_nothing(golden, stressed_weights):
    net = CiaoSR().eval()
    net.load_state_dict(stressed_weights)
    lr = golden['extra_cases']['nonsquare_19x26_x3.3']['lr']
    whole = super_resolve(net, lr, 3.3, chunk=10 ** 6)
    assert whole.shape == (1, 3, 63, 86)
    for chunk in (999, 4096):  # bit-identical with AVX-512 kernels; AVX2's GEMMs round by the number of rows
        torch.testing.assert_close(super_resolve(net, lr, 3.3, chunk=chunk), whole, atol=1e-6, rtol=0)

def test_batch_rows_are_independent(golden, stressed_weights):
    case = golden['extra_cases']['batch2_24x24_x3']
    net = CiaoSR().eval()
    net.load_state_dict(stressed_weights)
    both = super_resolve(net, case['lr'], 3)
    torch.testing.assert_close(both[1:], super_resolve(net, case['lr'][1:], 3), atol=1e-6, rtol=0)

def test_tiled_output_matches_untiled(stressed_weights, photo, psnr):
    """LR tiles with blending: PSNR >= 45 dB against the whole image, with progress counts."""
    net = CiaoSR().eval()
    net.load_state_dict(stressed_weights)
    lr = torch.from_numpy(photo[100:132, 60:92].copy()).permute(2, 0, 1)[None].float() / 255
    whole = super_resolve(net, lr, 2.0)
    calls = []
    tiled = super_resolve(net, lr, 2.0, tile=20, tile_overlap=6, chunk=1000,
                          progress=lambda done, total: calls.append((done, total)))
    assert 45 <= psnr(tiled, whole) < 80  # close, yet really tiled
    assert calls[-1][0] == calls[-1][1] > 64 * 64 and len(calls) > 4  # the blend bands are decoded twice

def test_blend_bands_are_capped_in_output_pixels(photo, tiny_model, psnr):
    """At x16 a band of overlap / 4 = 2 LR pixels would be 32 output pixels decoded twice per seam; bands are capped
    at BAND_OUTPUT_PIXELS (16) output pixels, and the tiled output stays close to the untiled one."""
    net = load_model(tiny_model)
    lr = torch.from_numpy(photo[100:132, 60:92].copy()).permute(2, 0, 1)[None].float() / 255
    calls = []
    with torch.no_grad():
        tiled = super_resolve(net, lr, 16, tile=20, tile_overlap=8, progress=lambda done, total: calls.append(total))
        whole = super_resolve(net, lr, 16)
    assert engine.BAND_OUTPUT_PIXELS == 16
    assert calls[-1] == (512 + 16) ** 2  # two tiles a side: one seam, 16 pixels decoded twice
    assert 45 <= psnr(tiled, whole) < 80

def test_tiled_chunking_changes_nothing(photo, tiny_model):
    net = load_model(tiny_model)
    lr = torch.from_numpy(photo[:30, :44].copy()).permute(2, 0, 1)[None].float() / 255
    tiled = super_resolve(net, lr, 2.3, tile=20, tile_overlap=6, chunk=10 ** 6)
    torch.testing.assert_close(super_resolve(net, lr, 2.3, tile=20, tile_overlap=6, chunk=777), tiled, atol=1e-6,
                               rtol=0)  # bit-identical with AVX-512 kernels; AVX2's GEMMs round by the number of rows
    assert not torch.equal(tiled, super_resolve(net, lr, 2.3))

@pytest.mark.parametrize('length,side,overlap', [(256, 128, 32), (100, 40, 16), (97, 60, 30), (50, 50, 8)])
def test_smooth_tiles_blend_to_one_and_stay_off_tile_edges(length, side, overlap):
    tiles = engine.axis_tiles(length, side, overlap, 'smooth')
    assert tiles[0][0] == 0 and tiles[-1][0] + side == length
    positions = torch.arange(0, length, 0.25) + 0.125
    total = torch.zeros_like(positions)
    for start, lo, hi, band in tiles:
        inside = (positions >= lo) & (positions < hi)
        total[inside] += engine._axis_weights(positions[inside], lo, hi, band, length)
        used = positions[inside]
        assert start == 0 or used.min() >= start + 3 * overlap / 8 - 0.5  # never near an inner tile edge
        assert start + side == length or used.max() <= start + side - 3 * overlap / 8 + 0.5
    torch.testing.assert_close(total, torch.ones_like(total))
    decoded = sum(hi - lo for _, lo, hi, _ in tiles)
    assert decoded <= length + (len(tiles) - 1) * overlap / 4  # overlaps decoded twice only within the bands


@pytest.mark.parametrize('length,tile,overlap', [(320, 241, 32), (256, 64, 16), (200, 64, 16), (97, 60, 30),
                                                (1000, 330, 32), (50, 64, 16)])
def test_fitted_tiles_are_the_smallest_for_their_count(length, tile, overlap):
    def count(side):
        return len(engine.axis_tiles(length, side, overlap, 'smooth'))
    side = engine.fitted_side(length, tile, overlap)
    assert side <= min(tile, length) and count(side) == count(min(tile, length))
    if side < length:
        assert count(side - 1) > count(side)  # the smallest with that count
        starts = [start for start, *_ in engine.axis_tiles(length, side, overlap, 'smooth')]
        assert min(b - a for a, b in zip(starts, starts[1:])) <= side - overlap  # still overlapping enough
    assert engine.fitted_side(320, 241, 32) == 176 and engine.fitted_side(256, 64, 16) == 64


def test_memory_plan_follows_the_budget():
    def encode_peak(t):  # the measured model of engine.memory_plan's docstring, fp32
        return engine.TILE_OVERHEAD_BYTES + engine.ENCODE_PIXEL_BYTES * t ** 2
    net = CiaoSR()
    budget = 360 * 2 ** 20
    small, large = engine.memory_plan(net, budget), engine.memory_plan(net, 4 * 2 ** 30)
    assert engine.MIN_AUTO_TILE <= small[0] < large[0] and small[1] == large[1] == net.runtime.chunk('cpu')
    assert encode_peak(small[0]) <= budget < encode_peak(small[0] + 1)  # the largest tile that fits
    assert large[0] == engine.SPEED_TILE['cpu']  # once memory allows more, speed caps the tile
    assert engine.memory_plan(net, budget, half=True) == small  # CPU chunks are cache-sized anyway
    assert engine.memory_plan(net, 2 ** 30, tile=64)[0] == 64
    with pytest.raises(MemoryError, match='too little room for a 32-pixel tile'):  # below MIN_AUTO_TILE
        engine.memory_plan(net, 2 ** 20)
    # without the cross-scale attention the work per pixel does not grow with the tile: only memory caps it
    for local in (CiaoSR(non_local_attn=False), LIIF()):
        assert not local.tile_wide_attention and engine.speed_tile(local, 'cpu') is None
        assert engine.memory_plan(local, 4 * 2 ** 30)[0] == engine.largest_tile(local, 4 * 2 ** 30) > 64
        assert engine.speed_tile(local, 'cuda') == engine.SPEED_TILE['cuda']
    assert net.tile_wide_attention and engine.speed_tile(net, 'cpu') == engine.SPEED_TILE['cpu']
