"""Image bytes -> MobileNetV2 input pixels, or the reason they cannot be.

Pure functions (no Spark, no TensorFlow) so they run the same in tests and on executors.
Decoding stops at 224x224 RGB uint8 pixels: the [-1, 1] scaling is the first op of the model
graph each engine runs (job.model.inference_function), where it is vectorised and costs the
executor's Python nothing (a float32 copy per image here halved decode throughput).

PIL decodes (formats, EXIF orientation, colour modes, draft mode for huge JPEGs); OpenCV resizes,
because PIL's scalar bicubic took ~0.8 ms of the ~1.1 ms an image cost to prepare, as much as 8 %
of what ONNX Runtime needs to run MobileNetV2 on it. OpenCV's SIMD bicubic takes ~0.08 ms.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SIZE = (224, 224)
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


def decode_image(content: bytes | None) -> np.ndarray:
    """Decode, orient, convert to RGB and resize to uint8 224x224x3.

    JPEGs larger than needed are decoded at a reduced scale (PIL draft mode), which bounds
    memory for huge photos. The seed resized with PIL's bicubic; OpenCV's bicubic differs from it
    by under one grey level on average (tests/job/test_decode.py measures it).
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
            if img.format == "JPEG":
                img.draft("RGB", IMAGE_SIZE)
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode != "RGB":
                img = _to_rgb(img)
            pixels = resize(np.asarray(img, dtype=np.uint8))
    except Rejected:
        raise
    except UnidentifiedImageError:
        raise Rejected("not an image (unrecognized format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected(f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, cv2.error) as exc:
        raise Rejected(f"corrupt or truncated image ({exc})") from None
    if pixels.shape != (*IMAGE_SIZE, 3):
        raise Rejected(f"unexpected decoded shape {pixels.shape}")
    return pixels


def resize(pixels: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 to 224x224x3: bicubic when enlarging, pixel-area averaging (no aliasing) when shrinking."""
    height, width = pixels.shape[:2]
    if (height, width) == IMAGE_SIZE:
        return pixels
    shrinking = height > IMAGE_SIZE[0] and width > IMAGE_SIZE[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(pixels, IMAGE_SIZE[::-1], interpolation=interpolation)


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


def decode_batch(contents: list[bytes | None]) -> tuple[np.ndarray, list[int], dict[int, str]]:
    """Decode a batch; return (uint8 pixels of the valid images, their indices, {index: rejection reason})."""
    pixels = np.empty((len(contents), *IMAGE_SIZE, 3), np.uint8)
    valid: list[int] = []
    reasons: dict[int, str] = {}
    for i, content in enumerate(contents):
        try:
            pixels[len(valid)] = decode_image(content)
            valid.append(i)
        except Rejected as exc:
            reasons[i] = str(exc)
    return pixels[: len(valid)], valid, reasons
