"""ciaosr_arch.image: integer pixels <-> float image tensors (shapes, dtypes, ranges, rounding, bands)."""
import numpy as np
import pytest
import torch
from basicsr.utils import tensor2img

import ciaosr_arch  # noqa: F401  (its compat shim first: basicsr needs it)
from ciaosr_arch import image
from ciaosr_arch.image import to_pixels, to_tensor


def levels(dtype):
    """Every level of an integer dtype as an [H, W, 1] array."""
    return np.arange(np.iinfo(dtype).max + 1, dtype=dtype).reshape(256, -1, 1)


@pytest.mark.parametrize('dtype, peak', [(np.uint8, 255), (np.uint16, 65535)])
def test_every_level_goes_to_level_over_peak_and_back(dtype, peak):
    pixels = levels(dtype)
    tensor = to_tensor(pixels)
    assert tensor.shape == (1, 1, *pixels.shape[:2]) and tensor.dtype == torch.float32 and tensor.is_contiguous()
    assert torch.equal(tensor[0, 0], torch.from_numpy(pixels[..., 0].astype(np.float32)) / peak)
    assert tensor.min() == 0 and tensor.max() == 1
    back = to_pixels(tensor[0], dtype)
    assert back.dtype == dtype and back.shape == pixels.shape
    np.testing.assert_array_equal(back, pixels)


def test_layouts_and_batches():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    tensor = to_tensor(batch)
    assert tensor.shape == (2, 3, 5, 7)
    assert torch.equal(tensor[1, 2], torch.from_numpy(batch[1, ..., 2]).float() / 255)  # channel, row, column
    one = to_tensor(batch[1])
    assert one.shape == (1, 3, 5, 7) and torch.equal(one[0], tensor[1])
    assert to_pixels(tensor).shape == (2, 5, 7, 3)
    np.testing.assert_array_equal(to_pixels(tensor), batch)
    np.testing.assert_array_equal(to_pixels(one[0]), batch[1])


def test_any_array_is_copied_never_shared():
    pixels = np.random.default_rng(1).integers(0, 65536, (6, 4, 3), dtype=np.uint16)
    pixels.flags.writeable = False
    flipped = pixels[::-1, ::-2]  # negative strides: torch.from_numpy refuses them
    assert torch.equal(to_tensor(flipped), to_tensor(np.ascontiguousarray(flipped)))
    writable = pixels.copy()
    tensor = to_tensor(writable)
    writable[:] = 0
    assert tensor.max() > 0


def test_uint8_output_is_basicsr_tensor2img():
    """Clamped to [0, 1], times 255, rounded half to even: BasicSR's tensor2img, the benchmark protocol's rounding."""
    torch.manual_seed(0)
    sr = torch.rand(1, 3, 40, 30) * 1.2 - 0.1
    sr[0, 0, 0, :4] = torch.tensor([0.5, 1.5, 2.5, 3.5]) / 255  # halves (as far as float32 holds them)
    np.testing.assert_array_equal(to_pixels(sr[0]), tensor2img(sr, rgb2bgr=False))
    assert to_pixels(sr[0]).min() == 0 and to_pixels(sr[0]).max() == 255


def test_uint16_output_rounds_in_float32_to_the_nearest_level():
    sr = torch.rand(3, 20, 10, generator=torch.Generator().manual_seed(2)) * 1.2 - 0.1
    expected = np.round(np.clip(sr.permute(1, 2, 0).numpy(), 0, 1) * np.float32(65535)).astype(np.uint16)
    np.testing.assert_array_equal(to_pixels(sr, np.uint16), expected)


def test_other_precisions_are_computed_in_float32():
    sr = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3))
    half = sr.to(torch.bfloat16)
    np.testing.assert_array_equal(to_pixels(half), to_pixels(half.float()))


def test_bands_and_out(monkeypatch):
    """Bands of a few rows give what one pass gives; `out` is written (one channel copied to each), not a copy."""
    sr = torch.rand(1, 37, 11, generator=torch.Generator().manual_seed(4))
    whole = to_pixels(sr)
    monkeypatch.setattr(image, 'BAND_SAMPLES', 30)  # 2 rows of 11 per band
    np.testing.assert_array_equal(to_pixels(sr), whole)
    out = np.zeros((37, 11, 4), np.uint16)
    assert to_pixels(sr, out=out[..., :3]).base is out
    np.testing.assert_array_equal(out[..., :3], np.repeat(to_pixels(sr, np.uint16), 3, axis=2))
    assert not out[..., 3].any()


def test_errors_name_what_is_accepted():
    with pytest.raises(TypeError, match='uint8 or uint16, got float32'):
        to_tensor(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(TypeError, match='uint8 or uint16, got int32'):
        to_pixels(torch.zeros(3, 2, 2), np.int32)
    with pytest.raises(ValueError, match=r'\[H, W, C\] or \[N, H, W, C\], got shape \(2, 2\)'):
        to_tensor(np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match=r'\[C, H, W\] or \[N, C, H, W\], got shape \(2, 2\)'):
        to_pixels(torch.zeros(2, 2))
    with pytest.raises(TypeError, match=r'image must be a torch.Tensor \[C, H, W\] or \[N, C, H, W\], got ndarray'):
        to_pixels(np.zeros((3, 2, 2), np.float32))
