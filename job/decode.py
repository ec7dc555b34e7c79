"""Image bytes -> MobileNetV2 input, or the reason it cannot be one.

Pure functions (no Spark, no TensorFlow) so they run the same in tests and on executors.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SIZE = (224, 224)
# Refuse images whose decoded size could exhaust an executor (PIL warns at ~89 Mpx).
MAX_PIXELS = 100_000_000


class Rejected(Exception):
    """The input cannot be featurized; the message is the reason written to rejected/."""


def preprocess_input(pixels: np.ndarray) -> np.ndarray:
    """MobileNetV2's preprocessing (Keras mode "tf"): scale [0, 255] to [-1, 1]."""
    return pixels / np.float32(127.5) - np.float32(1.0)


def decode_image(content: bytes | None) -> np.ndarray:
    """Decode, orient, convert to RGB and resize like the seed notebook; return float32 HxWx3.

    JPEGs larger than needed are decoded at a reduced scale (PIL draft mode), which bounds
    memory for huge photos; images of the sample size are decoded exactly as the seed does.
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
            img = img.resize(IMAGE_SIZE)
    except Rejected:
        raise
    except UnidentifiedImageError:
        raise Rejected("not an image (unrecognized format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise Rejected(f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise Rejected(f"corrupt or truncated image ({exc})") from None
    pixels = np.asarray(img, dtype=np.float32)
    if pixels.shape != (*IMAGE_SIZE, 3):
        raise Rejected(f"unexpected decoded shape {pixels.shape}")
    return preprocess_input(pixels)


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
    """Decode a batch; return (stacked valid images, their indices, {index: rejection reason})."""
    images: list[np.ndarray] = []
    valid: list[int] = []
    reasons: dict[int, str] = {}
    for i, content in enumerate(contents):
        try:
            images.append(decode_image(content))
            valid.append(i)
        except Rejected as exc:
            reasons[i] = str(exc)
    if images:
        return np.stack(images), valid, reasons
    return np.zeros((0, *IMAGE_SIZE, 3), np.float32), valid, reasons
