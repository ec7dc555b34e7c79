"""Decoding: the seed's pixels for ordinary images, a clear reason for everything else."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import job.decode as decode_lib
from job.config import UsageError, from_argv
from job.decode import IMAGE_SIZE, Rejected, decode_batch, decode_image, preprocess_input
from tests.conftest import FRUIT_COUNT, fruit_images

# (width, height): upscaled, downscaled, both, one side only, degenerate; the batched exact
# resize takes those up to 4 x 224^2 pixels, Pillow the bigger ones (640x480, 3000x2000).
ODD_SIZES = [
    (1, 1),
    (2, 3),
    (100, 100),
    (37, 219),
    (500, 90),
    (224, 100),
    (100, 224),
    (225, 223),
    (300, 500),
    (448, 448),
    (640, 480),
    (3000, 2000),
]


def jpeg(img: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def seed_pixels(content: bytes) -> np.ndarray:
    """The seed notebook's preprocessing, verbatim (before Keras' scaling)."""
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB").resize((224, 224)))


def noisy_jpeg(width: int, height: int, seed: int) -> bytes:
    """Noise (every weight and the clipping matter) over a gradient, as an RGB JPEG."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width, dtype=np.float64)[None, :, None]
    pixels = np.clip(ramp + rng.normal(0, 60, (height, width, 3)), 0, 255).astype(np.uint8)
    return jpeg(Image.fromarray(pixels), quality=85)


# ---- the seed's pixels, exactly --------------------------------------------------------------


@pytest.fixture()
def fresh_plans(monkeypatch):
    """No vectorised plan built yet, as in a new Python worker."""
    monkeypatch.setattr(decode_lib, "_PLANS", {})
    monkeypatch.setattr(decode_lib, "_SEEN", {})


@pytest.fixture()
def plans_at_once(monkeypatch, fresh_plans):
    """Same-size images get the vectorised plan from the first two on (the job waits for 64)."""
    monkeypatch.setattr(decode_lib, "_PLAN_AFTER", 2)


@pytest.mark.usefixtures("fresh_plans")
def test_exact_is_the_seed_pixel_for_pixel_on_every_fixture_image() -> None:
    """Batched and one by one; this fails if the default resize is not Pillow's bicubic.

    The first 64 images go through Pillow, the others through the vectorised plan.
    """
    contents = [p.read_bytes() for p in fruit_images()]
    expected = np.stack([seed_pixels(c) for c in contents])
    batch, valid, reasons = decode_batch(contents)
    assert decode_lib._PLANS[(100, 100)].verified
    assert valid == list(range(FRUIT_COUNT)) and reasons == {}
    assert batch.dtype == np.uint8 and batch.shape == (FRUIT_COUNT, *IMAGE_SIZE, 3)
    differing = [i for i in range(FRUIT_COUNT) if not np.array_equal(batch[i], expected[i])]
    assert differing == [], f"{len(differing)} of {FRUIT_COUNT} images differ from the seed's pixels"
    for content, seed in zip(contents[::9], expected[::9], strict=True):
        np.testing.assert_array_equal(decode_image(content), seed)


@pytest.mark.usefixtures("plans_at_once")
@pytest.mark.parametrize(("width", "height"), ODD_SIZES)
def test_exact_is_the_seed_pixel_for_pixel_on_odd_sizes(width: int, height: int) -> None:
    contents = [noisy_jpeg(width, height, seed) for seed in range(3)]
    batch, valid, _ = decode_batch(contents)
    assert valid == [0, 1, 2]
    for content, pixels in zip(contents, batch, strict=True):
        np.testing.assert_array_equal(pixels, seed_pixels(content))
    np.testing.assert_array_equal(decode_image(contents[0]), seed_pixels(contents[0]))
    if width * height <= decode_lib._BATCH_MAX_PIXELS and (height, width) != IMAGE_SIZE:
        assert decode_lib._PLANS[(height, width)].verified  # the batch went through the plan


@pytest.mark.parametrize(
    ("width", "height"),
    [(w, h) for w in (1, 100, 223, 225, 300) for h in (223, 225, 2 * w - 224, 2 * w - 223) if h > 0],
)
def test_the_plan_takes_pillows_order_of_passes(width: int, height: int) -> None:
    """Pillow 13 resizes columns first when the height shrinks by > 2x the width's pixels: both sides of it."""
    rng = np.random.default_rng(width * 1000 + height)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2)]
    outs = [np.empty((*IMAGE_SIZE, 3), np.uint8) for _ in images]
    plan = decode_lib._ExactPlan(height, width)
    plan.resize(images, outs)
    assert plan.verified
    for image, out in zip(images, outs, strict=True):
        np.testing.assert_array_equal(out, np.asarray(Image.fromarray(image).resize((224, 224))))


@pytest.mark.usefixtures("plans_at_once")
def test_batches_of_mixed_sizes_keep_every_image_in_its_slot() -> None:
    """Same-size images are resized together; rejections and lone sizes sit in between."""
    sizes = [(100, 100), (37, 219), (100, 100), (500, 90), (37, 219), (224, 224), (100, 100), (640, 480)]
    contents: list[bytes | None] = [noisy_jpeg(w, h, i) for i, (w, h) in enumerate(sizes)]
    contents[3:3] = [b""]
    contents.append(b"not an image")
    # More sizes than can wait at once: they are resized before the batch ends.
    contents += [noisy_jpeg(20 + i % 40, 30, 100 + i) for i in range(2 * decode_lib._MAX_PENDING)]
    batch, valid, reasons = decode_batch(contents)
    assert sorted(reasons) == [3, 9] and valid == [i for i in range(len(contents)) if i not in (3, 9)]
    for pixels, index in zip(batch, valid, strict=True):
        np.testing.assert_array_equal(pixels, seed_pixels(contents[index]))


def test_rounding_is_pillows_half_up_and_clip_also_next_to_ties() -> None:
    """The exact resize rounds float64 sums with OpenCV: checked at every tie +-2 units, and outside 0..255."""
    ties = (np.arange(-300, 600)[:, None] << 22) + (1 << 21) + np.arange(-2, 3)[None, :]
    sums = np.concatenate([ties.ravel(), np.random.default_rng(0).integers(-(2**30), 2**31 - 1, 100_000)])
    expected = np.clip((sums + (1 << 21)) >> 22, 0, 255).astype(np.uint8)
    got = decode_lib._round_clip8((sums.astype(np.float64) * 2.0**-22).reshape(1, -1))
    np.testing.assert_array_equal(got.ravel(), expected)


# ---- --resize fast ---------------------------------------------------------------------------


def test_resize_option_defaults_to_exact_and_accepts_fast() -> None:
    base = ["--input", "in", "--output", "out"]
    assert from_argv(base).resize == "exact"
    assert from_argv([*base, "--resize", "fast"]).resize == "fast"
    with pytest.raises(UsageError, match="invalid choice"):
        from_argv([*base, "--resize", "bilinear"])
    with pytest.raises(ValueError, match="resize mode"):
        decode_batch([b""], "bilinear")


def test_fast_resize_is_opencv_other_pixels_close_to_the_seed() -> None:
    contents = [p.read_bytes() for p in fruit_images()[::10]]
    fast, _, _ = decode_batch(contents, "fast")
    seed = np.stack([seed_pixels(c) for c in contents])
    assert not np.array_equal(fast, seed)
    assert np.abs(fast.astype(np.float64) - seed).mean() < 1.0
    for content, pixels in zip(contents, fast, strict=True):
        np.testing.assert_array_equal(decode_image(content, "fast"), pixels)


def test_the_executor_stage_decodes_with_the_mode_it_is_given() -> None:
    import pandas as pd

    from job.featurize import featurize_batch

    contents = [p.read_bytes() for p in fruit_images()[:3]]
    pdf = pd.DataFrame({"path": ["a", "b", "c"], "label": ["x"] * 3, "content": contents})
    seen: list[np.ndarray] = []

    def predict(images: np.ndarray) -> np.ndarray:
        seen.append(images.copy())
        return np.ones((len(images), 4), np.float32)

    for mode in ("exact", "fast"):
        featurize_batch(pdf, predict, mode)
        np.testing.assert_array_equal(seen[-1], decode_batch(contents, mode)[0])
    assert not np.array_equal(seen[0], seen[1])


# ---- everything else -------------------------------------------------------------------------


def test_preprocess_matches_keras() -> None:
    from tensorflow.keras.applications.mobilenet_v2 import preprocess_input as keras_preprocess

    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(preprocess_input(x), keras_preprocess(x.copy()), atol=1e-6)


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_images_of_the_model_size_are_not_resampled(mode: str) -> None:
    img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    np.testing.assert_array_equal(decode_image(png(img), mode), np.asarray(img))


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_shrinking_averages_instead_of_aliasing(mode: str) -> None:
    """A 1-pixel checkerboard shrunk 2x must come out flat grey (antialiasing), not striped."""
    board = (np.indices((448, 448)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = decode_image(png(Image.fromarray(board)), mode)
    assert abs(float(out.mean()) - 127.5) < 1 and float(out.std()) < 2


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


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_exif_orientation_is_applied(mode: str) -> None:
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 100, 100))  # left half black
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise on display
    out = decode_image(jpeg(img, exif=exif.tobytes(), quality=95), mode)
    top, bottom = out[:100].mean(), out[124:].mean()
    assert top < 64 < 192 < bottom or top > 192 > 64 > bottom  # black half moved to top or bottom
    plain = decode_image(jpeg(img, quality=95), mode)
    assert plain[:, :100].mean() < 64 and plain[:, 124:].mean() > 192


def test_fast_mode_decodes_large_jpegs_at_reduced_scale() -> None:
    big = Image.new("RGB", (4000, 3000), (10, 120, 240))
    for mode in ("exact", "fast"):
        out = decode_image(jpeg(big, quality=80), mode)
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


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_decode_batch_separates_valid_and_rejected(mode: str) -> None:
    good = fruit_images()[0].read_bytes()
    images, valid, reasons = decode_batch([good, b"", good, b"nope"], mode)
    assert images.shape == (2, *IMAGE_SIZE, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[1], decode_image(good, mode))
    assert valid == [0, 2]
    assert set(reasons) == {1, 3}
