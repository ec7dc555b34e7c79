"""Image bytes -> MobileNetV2 input pixels, or the reason they cannot be.

Pure functions (no Spark, no TensorFlow) so they run the same in tests and on executors.
Decoding stops at 224x224 RGB uint8 pixels: the [-1, 1] scaling is the first op of the model
graph each engine runs (job.model.inference_function), where it is vectorised and costs the
executor's Python nothing (a float32 copy per image here halved decode throughput).

PIL decodes (formats, EXIF orientation, colour modes). Two resize modes (JobConfig.resize):

- "exact" (default): the seed's pixels. The seed did
  `np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((224, 224)))`: Pillow's bicubic
  (a = -0.5) in fixed point, on the image decoded at full size. MobileNetV2 features move by up
  to 9 % for +-1 grey level on 0.1 % of the pixels, so "the seed's preprocessing" has to mean
  the same pixels. The resize is job.exact_resize: Pillow's arithmetic compiled with numba, the
  same bytes (tests/job/test_decode.py) in ~0.1 ms instead of Pillow's ~0.7 ms per 100x100 image,
  so decode + resize stay within 5 % of ONNX inference (bench/decode.py).
- "fast": OpenCV (bicubic a = -0.75 when enlarging, area averaging when shrinking) after a
  reduced-scale JPEG decode (PIL draft mode): other pixels than the seed's (features with a
  cosine of ~0.96 to the exact ones), 0.19-0.22 ms per image with the decode.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from job import exact_resize
from job.config import RESIZE_MODES

IMAGE_SIZE = (224, 224)  # (height, width)
# Refuse images whose decoded size could exhaust an executor (PIL warns at ~89 Mpx).
MAX_PIXELS = 100_000_000
# A Spark task is given one core (spark.task.cpus); OpenCV must not start a thread pool of its own.
cv2.setNumThreads(1)


class Rejected(Exception):
    """The input cannot be featurized; the message is the reason written to rejected/."""


def preprocess_input(pixels):
    """MobileNetV2's preprocessing (Keras mode "tf"): float32 [0, 255] to [-1, 1].

    Written with operators only, so the same formula runs on numpy arrays and inside a traced
    TensorFlow graph.
    """
    return pixels / np.float32(127.5) - np.float32(1.0)


def decode_image(content: bytes | None, mode: str = "exact") -> np.ndarray:
    """Decode, orient, convert to RGB and resize to uint8 224x224x3 (`mode`: see the module doc)."""
    out = np.empty((*IMAGE_SIZE, 3), np.uint8)
    _resize_into(_decode(content, mode), mode, out)
    return out


def _resize_into(pixels: np.ndarray, mode: str, out: np.ndarray) -> None:
    try:
        if mode == "exact":
            exact_resize.resize_into(pixels, out)
        else:
            out[...] = resize(pixels, mode)
    except (OSError, ValueError, cv2.error) as exc:
        raise Rejected(f"corrupt or truncated image ({exc})") from None


def decode_batch(contents: list[bytes | None], mode: str = "exact") -> tuple[np.ndarray, list[int], dict[int, str]]:
    """Decode a batch; return (uint8 pixels of the valid images, their indices, {index: rejection reason}).

    Same pixels as `decode_image` on each content, resized straight into the batch's array.
    """
    _check_mode(mode)
    pixels = np.empty((len(contents), *IMAGE_SIZE, 3), np.uint8)
    valid: list[int] = []
    reasons: dict[int, str] = {}
    for i, content in enumerate(contents):
        try:
            decoded = _decode(content, mode)
            _resize_into(decoded, mode, pixels[len(valid)])
        except Rejected as exc:
            reasons[i] = str(exc)
            continue
        valid.append(i)
    return pixels[: len(valid)], valid, reasons


def resize(pixels: np.ndarray, mode: str = "exact") -> np.ndarray:
    """One HxWx3 uint8 image to 224x224x3: Pillow's bicubic ("exact") or OpenCV's ("fast")."""
    _check_mode(mode)
    height, width = pixels.shape[:2]
    if (height, width) == IMAGE_SIZE:
        return pixels
    if mode == "exact":
        out = np.empty((*IMAGE_SIZE, 3), np.uint8)
        exact_resize.resize_into(pixels, out)
        return out
    shrinking = height > IMAGE_SIZE[0] and width > IMAGE_SIZE[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(pixels, IMAGE_SIZE[::-1], interpolation=interpolation)


def _check_mode(mode: str) -> None:
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")


def _decode(content: bytes | None, mode: str) -> np.ndarray:
    """Bytes to oriented RGB uint8 HxWx3 at the decoded size, or Rejected.

    "fast" decodes JPEGs larger than needed at a reduced scale (PIL draft mode: less memory and
    time for big photos, other pixels). "exact" decodes at full size, as the seed did; MAX_PIXELS
    bounds what that can cost.
    """
    if not content:
        raise Rejected("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(content))
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise Rejected(f"image too large ({width}x{height} pixels > {MAX_PIXELS})")
            if mode == "fast" and img.format == "JPEG":
                img.draft("RGB", IMAGE_SIZE)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # no copy when there is nothing to turn
            if img.mode != "RGB":
                img = _to_rgb(img)
            return np.asarray(img, dtype=np.uint8)
    except Rejected:
        raise
    except UnidentifiedImageError:
        raise Rejected("not an image (unrecognized format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected(f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise Rejected(f"corrupt or truncated image ({exc})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Grayscale, palette, CMYK, 16-bit and alpha images to RGB (alpha composited on white)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")
