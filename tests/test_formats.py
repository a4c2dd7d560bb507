"""The converter both ways: the decode thread converts the mix to device bytes once, and the
writer brings a period back to float only when it must change it (a fade, a frame
correction); the frames it does not change must reach the card bit for bit."""

import numpy as np
import pytest

from appliance.audio.formats import FORMAT_INFO, Converter


@pytest.mark.parametrize("fmt", sorted(FORMAT_INFO))
def test_convert_into_ring_rows_equals_convert_and_dequantize_is_its_inverse(fmt):
    rng = np.random.default_rng(7)
    conv = Converter(fmt, 8, 600, count_clips=False)
    x = rng.uniform(-1.3, 1.3, (600, 8)).astype(np.float32)
    x[:4] = 0.0
    x[4], x[5], x[6] = 1.0, -1.0, 1e-9
    x[7:40] *= 1e-4  # quiet frames: the low bits matter
    expected = bytes(conv.convert(x))
    rows = np.zeros((600, conv.frame_bytes), np.uint8)
    conv.convert(x, out=rows)
    assert rows.tobytes() == expected
    back = np.zeros_like(x)
    conv.dequantize(rows, back)
    assert bytes(conv.convert(back)) == expected
    bits = FORMAT_INFO[fmt][1]
    # one step of the format; S32 full scale stops 2^-24 short of 1.0 (float32 mantissa)
    tol = max(2.0 ** -(bits - 1), 2.0 ** -24) if bits else 0.0
    assert np.abs(np.clip(x, -1.0, 1.0) - back).max() <= tol
    # negative values survive the 3-byte sign extension
    assert (np.sign(back[x < -1e-3]) == -1).all()
