"""Decoding: the seed's pixels for ordinary images, a clear reason for everything else."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from job import exact_resize
from job.config import UsageError, from_argv
from job.decode import IMAGE_SIZE, Rejected, decode_batch, decode_image, preprocess_input
from tests.conftest import FRUIT_COUNT, REPO, fruit_images

# (width, height): upscaled, downscaled, both, one side only, degenerate, large; all go through the
# compiled resize (job.exact_resize) once their size has a plan.
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
    """No plan built yet, as in a new Python worker."""
    monkeypatch.setattr(exact_resize, "_PLANS", {})
    monkeypatch.setattr(exact_resize, "_SEEN", {})


@pytest.fixture()
def plans_at_once(monkeypatch, fresh_plans):
    """Every size gets its compiled plan at its first image (the job waits for the second)."""
    monkeypatch.setattr(exact_resize, "_PLAN_AFTER", 1)


def compiled_kernels():
    kernels, status = exact_resize._kernels()
    assert kernels is not None, status  # numba is a dependency of the job: it must compile here
    return kernels


def test_the_compiled_resize_runs_here() -> None:
    compiled_kernels()
    assert exact_resize.status().startswith("numba ")


@pytest.mark.usefixtures("fresh_plans")
def test_exact_is_the_seed_pixel_for_pixel_on_every_fixture_image() -> None:
    """Batched and one by one; this fails if the default resize is not Pillow's bicubic.

    The first image goes through Pillow, the others through the compiled plan.
    """
    contents = [p.read_bytes() for p in fruit_images()]
    expected = np.stack([seed_pixels(c) for c in contents])
    batch, valid, reasons = decode_batch(contents)
    assert exact_resize._PLANS[(100, 100, *IMAGE_SIZE)].verified
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
    if (height, width) != IMAGE_SIZE:
        assert exact_resize._PLANS[(height, width, *IMAGE_SIZE)].verified  # the batch went through the plan


@pytest.mark.usefixtures("fresh_plans")
@pytest.mark.parametrize(
    ("width", "height"),
    [(w, h) for w in (1, 100, 223, 225, 300) for h in (223, 225, 2 * w - 224, 2 * w - 223) if h > 0],
)
def test_the_plan_takes_pillows_order_of_passes(width: int, height: int) -> None:
    """Pillow 13 resizes columns first when the height shrinks by > 2x the width's pixels: both sides of it."""
    rng = np.random.default_rng(width * 1000 + height)
    plan = exact_resize._Plan(compiled_kernels(), height, width, *IMAGE_SIZE)
    assert plan.verified
    for image in [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(2)]:
        out = np.empty((*IMAGE_SIZE, 3), np.uint8)
        plan.run(image, out)
        np.testing.assert_array_equal(out, np.asarray(Image.fromarray(image).resize((224, 224))))


def test_random_sizes_and_other_output_sizes_match_pillow() -> None:
    """Sizes a fixed list could miss (primes, extreme ratios), and outputs other than 224x224."""
    rng = np.random.default_rng(7)
    kernels = compiled_kernels()
    for _ in range(40):
        height, width = (int(v) for v in rng.integers(1, 700, 2))
        out_height, out_width = (int(v) for v in rng.integers(1, 300, 2))
        if (height, width) == (out_height, out_width):
            continue
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        plan = exact_resize._Plan(kernels, height, width, out_height, out_width)
        out = np.empty((out_height, out_width, 3), np.uint8)
        plan.run(image, out)
        expected = np.asarray(Image.fromarray(image).resize((out_width, out_height), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(out, expected, err_msg=f"{width}x{height} -> {out_width}x{out_height}")


@pytest.mark.usefixtures("plans_at_once")
def test_batches_of_mixed_sizes_keep_every_image_in_its_slot() -> None:
    """Each image is resized into its own slot; rejections and many sizes sit in between."""
    sizes = [(100, 100), (37, 219), (100, 100), (500, 90), (37, 219), (224, 224), (100, 100), (640, 480)]
    contents: list[bytes | None] = [noisy_jpeg(w, h, i) for i, (w, h) in enumerate(sizes)]
    contents[3:3] = [b""]
    contents.append(b"not an image")
    contents += [noisy_jpeg(20 + i % 40, 30, 100 + i) for i in range(64)]
    batch, valid, reasons = decode_batch(contents)
    assert sorted(reasons) == [3, 9] and valid == [i for i in range(len(contents)) if i not in (3, 9)]
    for pixels, index in zip(batch, valid, strict=True):
        np.testing.assert_array_equal(pixels, seed_pixels(contents[index]))


def test_rounding_and_clipping_are_pillows_int32_arithmetic() -> None:
    """(2^21 + sum(p * k)) >> 22 clipped to 0..255, at every tie +-2 units and far outside 0..255."""
    rng = np.random.default_rng(0)
    # 2^21 + target = n * 2^22 + d: the rounding ties +-2, below 0 and above 255 (int32 stays in range).
    ties = (np.arange(-100, 300)[:, None] << 22) - (1 << 21) + np.arange(-2, 3)[None, :]
    targets = np.concatenate([ties.ravel(), rng.integers(-(2**30), 2**30, 100_000)])
    # Two taps: pixel 1 x k0 + pixel 0 x k1 reaches each target sum (k1 keeps a second term busy).
    weights = np.stack([targets, rng.integers(-(2**20), 2**20, len(targets))], axis=1).astype(np.int32)
    src = np.array([[1], [0]], np.uint8)
    out = np.empty((len(targets), 1), np.uint8)
    kernels = compiled_kernels()
    kernels.resample_rows(src, weights, np.zeros(len(targets), np.int32), np.full(len(targets), 2, np.int32), out)
    expected = np.clip(((1 << 21) + targets) >> 22, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out[:, 0], expected)


def test_without_numba_pillow_resizes_the_same_pixels(monkeypatch, plans_at_once) -> None:
    monkeypatch.setattr(exact_resize, "_KERNELS", [None, "Pillow (numba is not installed: test)"])
    contents = [noisy_jpeg(w, h, 1) for w, h in ((100, 100), (37, 219), (640, 480))]
    batch, valid, _ = decode_batch(contents)
    assert valid == [0, 1, 2] and exact_resize._PLANS == {}
    for content, pixels in zip(contents, batch, strict=True):
        np.testing.assert_array_equal(pixels, seed_pixels(content))
    assert exact_resize.status().startswith("Pillow")


ZIP_PROBE = """
import glob, io, sys
import numpy as np
from PIL import Image
from job import decode, exact_resize
image = np.random.default_rng(1).integers(0, 256, (100, 100, 3), dtype=np.uint8)
buffer = io.BytesIO(); Image.fromarray(image).save(buffer, format="PNG")
pixels, valid, _ = decode.decode_batch([buffer.getvalue()] * 3)
assert valid == [0, 1, 2] and exact_resize._PLANS[(100, 100, 224, 224)].verified
assert (pixels == np.asarray(Image.fromarray(image).resize((224, 224)))).all()
assert ".zip" in decode.__file__, decode.__file__
print(exact_resize.status())
"""


def run_from_zip(tmp_path: Path, cache: Path) -> str:
    """The probe with the job package imported from a zip, as spark-submit --py-files ships it."""
    archive = tmp_path / "job.zip"
    if not archive.exists():
        with zipfile.ZipFile(archive, "w") as z:
            for path in (REPO / "job").glob("*.py"):
                z.write(path, f"job/{path.name}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUMBA_CACHE_DIR")}
    env.update(PYTHONPATH=str(archive), FEATURIZER_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, "-c", ZIP_PROBE], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_from_a_zip_the_kernels_compile_once_and_are_cached(tmp_path) -> None:
    """numba caches by source file: from a zip the kernels' source is written to the cache once."""
    cache = tmp_path / "cache"
    first = run_from_zip(tmp_path, cache)
    assert first == f"numba 0.68.1 (cached in {cache / 'numba'})"
    (copy,) = (cache / "numba" / "src").glob("*/resize_kernels.py")
    assert copy.read_bytes() == (REPO / "job" / "resize_kernels.py").read_bytes()
    compiled = sorted(p.name for p in (cache / "numba").rglob("*.nbc"))
    assert any("resample_rows" in name for name in compiled) and any("swap_axes" in name for name in compiled)
    stamps = {p: p.stat().st_mtime_ns for p in (cache / "numba").rglob("*") if p.is_file()}
    assert run_from_zip(tmp_path, cache) == first  # a second worker loads what the first compiled
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "the second run compiled or rewrote again"


def test_an_unwritable_cache_still_gives_the_seed_pixels(tmp_path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    assert run_from_zip(tmp_path, blocked) == "numba 0.68.1 (not cached)"


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
