"""Decoding: the seed's preprocessing for ordinary images, a clear reason for everything else."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from job.decode import IMAGE_SIZE, Rejected, decode_batch, decode_image, preprocess_input
from tests.conftest import fruit_images


def jpeg(img: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_close_to_the_seed_preprocessing_on_real_images() -> None:
    """The seed resized with PIL's bicubic, the job with OpenCV's (10x faster): under one grey level apart."""
    from tensorflow.keras.applications.mobilenet_v2 import preprocess_input as keras_preprocess
    from tensorflow.keras.preprocessing.image import img_to_array

    for path in fruit_images()[::50]:
        content = path.read_bytes()
        seed_pixels = img_to_array(Image.open(io.BytesIO(content)).resize([224, 224]))
        pixels = decode_image(content)
        assert pixels.dtype == np.uint8 and pixels.shape == seed_pixels.shape
        assert np.abs(pixels - seed_pixels).mean() < 1.0
        assert np.abs(preprocess_input(pixels.astype(np.float32)) - keras_preprocess(seed_pixels)).mean() < 1 / 127.5


def test_images_of_the_model_size_are_not_resampled() -> None:
    img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    np.testing.assert_array_equal(decode_image(png(img)), np.asarray(img))


def test_shrinking_averages_instead_of_aliasing() -> None:
    """A 1-pixel checkerboard shrunk 2x must come out flat grey (area averaging), not striped."""
    board = (np.indices((448, 448)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = decode_image(png(Image.fromarray(board)))
    assert abs(float(out.mean()) - 127.5) < 1 and float(out.std()) < 2


def test_preprocess_matches_keras() -> None:
    from tensorflow.keras.applications.mobilenet_v2 import preprocess_input as keras_preprocess

    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(preprocess_input(x), keras_preprocess(x.copy()), atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA", "I;16", "1"])
def test_any_colour_mode_becomes_rgb(mode: str) -> None:
    img = Image.new("RGB", (50, 40), (200, 30, 30)).convert(mode if mode != "I;16" else "L")
    if mode == "I;16":
        img = Image.fromarray((np.asarray(img, dtype=np.uint16) * 257).astype(np.uint16))
    data = png(img) if mode not in ("CMYK",) else jpeg(img)
    out = decode_image(data)
    assert out.shape == (*IMAGE_SIZE, 3) and out.dtype == np.uint8
    assert out.std() > 0 or mode in ("L", "I;16", "1", "LA")  # colour survives where there was colour


def test_sixteen_bit_png_keeps_its_brightness() -> None:
    grey = Image.fromarray(np.full((30, 30), 32768, dtype=np.uint16))
    out = decode_image(png(grey))
    assert abs(float(out.mean()) - 128) < 2.5


def test_transparent_pixels_become_white() -> None:
    out = decode_image(png(Image.new("RGBA", (20, 20), (0, 0, 0, 0))))
    np.testing.assert_array_equal(out, 255)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 100, 100))  # left half black
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise on display
    out = decode_image(jpeg(img, exif=exif.tobytes(), quality=95))
    top, bottom = out[:100].mean(), out[124:].mean()
    assert top < 64 < 192 < bottom or top > 192 > 64 > bottom  # black half moved to top or bottom
    plain = decode_image(jpeg(img, quality=95))
    assert plain[:, :100].mean() < 64 and plain[:, 124:].mean() > 192


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    big = Image.new("RGB", (4000, 3000), (10, 120, 240))
    out = decode_image(jpeg(big, quality=80))
    assert out.shape == (*IMAGE_SIZE, 3)
    img = Image.open(io.BytesIO(jpeg(big, quality=80)))
    img.draft("RGB", IMAGE_SIZE)
    assert img.size[0] <= 4000 // 8  # draft mode really shrinks what gets decoded


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, this is text and not an image\n", "not an image"),
        (bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)), "not an image"),
    ],
)
def test_rejections_have_reasons(content: bytes, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        decode_image(content)


def test_truncated_jpeg_is_rejected() -> None:
    data = fruit_images()[0].read_bytes()
    with pytest.raises(Rejected, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def test_decode_batch_separates_valid_and_rejected() -> None:
    good = fruit_images()[0].read_bytes()
    images, valid, reasons = decode_batch([good, b"", good, b"nope"])
    assert images.shape == (2, *IMAGE_SIZE, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[1], decode_image(good))
    assert valid == [0, 2]
    assert set(reasons) == {1, 3}
