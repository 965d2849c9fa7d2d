"""The image frontend against PIL computations written here, plus its errors."""

import json

import numpy as np
import pytest
from PIL import Image, ImageOps

import edgesnn as es


def _random_rgb(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def test_registered_and_config_rebuilds_it():
    assert "image" in es.frontends()
    fe = es.frontend("image", size=(32, 24), channels=3, fit="pad", pad_value=7, invert=True)
    assert fe.output_shape == (32, 24, 3)
    again = es.frontend(fe.name, **json.loads(json.dumps(fe.config)))
    assert again.config == fe.config and again.output_shape == fe.output_shape


def test_crop_keeps_aspect_and_cuts_the_centre(tmp_path):
    image = _random_rgb(56, 84)  # H=56, W=84: scale 1/2 -> 28x42, then the middle 28 columns
    path = tmp_path / "wide.png"
    image.save(path)
    expected = np.asarray(image.resize((42, 28), Image.Resampling.BILINEAR))[:, 7:35]
    out = es.frontend("image", size=(28, 28), channels=3, fit="crop")(path)
    assert out.dtype == np.uint8 and out.shape == (28, 28, 3)
    np.testing.assert_array_equal(out, expected)


def test_pad_matches_imageops_pad(tmp_path):
    image = _random_rgb(42, 84, seed=1)  # contain in 28x28 -> 14x28, 7 rows of padding above and below
    expected = np.asarray(ImageOps.pad(image, (28, 28), method=Image.Resampling.BILINEAR, color=(9, 9, 9)))
    out = es.frontend("image", size=(28, 28), channels=3, fit="pad", pad_value=9)(image)
    np.testing.assert_array_equal(out, expected)
    assert np.all(out[:7] == 9) and np.all(out[-7:] == 9)


def test_grayscale_and_invert_follow_pil_convert(tmp_path):
    image = _random_rgb(28, 28, seed=2)
    gray = np.asarray(image.convert("L"))
    fe = es.frontend("image", size=(28, 28), channels=1)
    np.testing.assert_array_equal(fe(image)[:, :, 0], gray)  # same size: no resampling
    inverted = es.frontend("image", size=(28, 28), channels=1, invert=True)(image)
    np.testing.assert_array_equal(inverted[:, :, 0], 255 - gray)


def test_arrays_uint8_and_float(tmp_path):
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    fe = es.frontend("image", size=(16, 16))
    np.testing.assert_array_equal(fe(pixels)[:, :, 0], pixels)
    np.testing.assert_array_equal(fe(pixels[:, :, None])[:, :, 0], pixels)
    as_float = pixels / 255.0
    np.testing.assert_array_equal(fe(as_float)[:, :, 0], pixels)


def test_transparent_pixels_become_black():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = 255          # white everywhere ...
    rgba[:4, :, 3] = 255         # ... opaque only in the top half
    out = es.frontend("image", size=(8, 8))(Image.fromarray(rgba, "RGBA"))[:, :, 0]
    assert np.all(out[:4] == 255) and np.all(out[4:] == 0)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    deep = (np.arange(16 * 16).reshape(16, 16) * 256).astype(np.uint16)   # 0 .. 65280
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    out = es.frontend("image", size=(16, 16))(path)[:, :, 0]
    np.testing.assert_array_equal(out, np.floor(deep / 257.0 + 0.5).astype(np.uint8))


def test_list_of_paths_makes_a_batch(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        _random_rgb(20, 30, seed=i).save(path)
        paths.append(str(path))
    fe = es.frontend("image", size=(10, 10))
    batch = fe(paths)
    assert batch.shape == (3, 10, 10, 1) and batch.dtype == np.uint8
    for i, path in enumerate(paths):
        np.testing.assert_array_equal(batch[i], fe(path))


def test_corrupt_and_missing_files(tmp_path):
    fe = es.frontend("image")
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    with pytest.raises(ValueError, match="broken.png is not an image"):
        fe(corrupt)
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    with pytest.raises(ValueError, match="not an image"):
        fe(text)
    with pytest.raises(FileNotFoundError, match="no such image file"):
        fe(tmp_path / "missing.png")


@pytest.mark.parametrize("bad, message", [
    (np.full((8, 8), np.nan), "NaN"),
    (np.full((8, 8), 1.5), r"\[0, 1\]"),
    (np.zeros((8, 8, 5), dtype=np.uint8), "shape"),
    (np.zeros((0, 8), dtype=np.uint8), "empty"),
    (np.full((8, 8), 300, dtype=np.int32), r"\[0, 255\]"),
])
def test_bad_arrays(bad, message):
    with pytest.raises(ValueError, match=message):
        es.frontend("image")(bad)


def test_bad_config_and_inputs():
    with pytest.raises(ValueError, match="channels"):
        es.frontend("image", channels=2)
    with pytest.raises(ValueError, match="fit"):
        es.frontend("image", fit="stretch")
    with pytest.raises(TypeError, match="expected a path"):
        es.frontend("image")(12345)
    with pytest.raises(ValueError, match="empty list"):
        es.frontend("image")([])
