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
  the same pixels. Pillow's resize takes ~0.5 ms per 100x100 image here, ~7 % of ONNX Runtime's
  ~8 core-ms per image, against a budget of 5 % for decode + resize. So once a size is common
  (_PLAN_AFTER images), same-size images are resized together by `_ExactPlan`, a vectorised
  re-implementation of Pillow's Resample.c with the same pixels bit for bit
  (tests/job/test_decode.py), ~0.25-0.3 ms per image; rare sizes and large images go through
  Pillow itself. Measured on a loaded 2-core machine (bench/decode.py): decode + resize
  0.41-0.49 ms per image, 5.0-6.0 % of ONNX inference (the seed's expression: 8.0-8.6 %).
- "fast": OpenCV (bicubic a = -0.75 when enlarging, area averaging when shrinking) after a
  reduced-scale JPEG decode (PIL draft mode): other pixels than the seed's (features with a
  cosine of ~0.96 to the exact ones), 0.19-0.22 ms per image with the decode.
"""

from __future__ import annotations

import io
import threading
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from job.config import RESIZE_MODES

IMAGE_SIZE = (224, 224)  # (height, width)
# Refuse images whose decoded size could exhaust an executor (PIL warns at ~89 Mpx).
MAX_PIXELS = 100_000_000
# A Spark task is given one core (spark.task.cpus); OpenCV must not start a thread pool of its own.
cv2.setNumThreads(1)

# Pillow's Resample.c: coefficients in fixed point with 22 fractional bits, sums rounded half up.
_PRECISION_BITS = 22
# The vectorised exact resize handles images up to this many pixels (bigger ones: Pillow), in
# chunks of this many same-size images (float64 buffers of a few MB stay in cache).
_BATCH_MAX_PIXELS = 4 * IMAGE_SIZE[0] * IMAGE_SIZE[1]
_CHUNK = 4
# Images of a batch held for batching before they are resized anyway (bounds memory).
_MAX_PENDING = 32
# A plan costs ~5-15 ms to build (weights, self-check): a size gets one once this many images
# of it went through Pillow in this process, and at most _MAX_PLANS sizes get one.
_PLAN_AFTER = 64
_MAX_PLANS = 64
_PLANS: dict[tuple[int, int], _ExactPlan] = {}
_SEEN: dict[tuple[int, int], int] = {}


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
    pixels = _decode(content, mode)
    try:
        return resize(pixels, mode)
    except (OSError, ValueError, cv2.error) as exc:
        raise Rejected(f"corrupt or truncated image ({exc})") from None


def decode_batch(contents: list[bytes | None], mode: str = "exact") -> tuple[np.ndarray, list[int], dict[int, str]]:
    """Decode a batch; return (uint8 pixels of the valid images, their indices, {index: rejection reason}).

    Same pixels as `decode_image` on each content; in "exact" mode images of the same size are
    resized together.
    """
    _check_mode(mode)
    pixels = np.empty((len(contents), *IMAGE_SIZE, 3), np.uint8)
    valid: list[int] = []
    reasons: dict[int, str] = {}
    pending = _Pending(pixels)
    for i, content in enumerate(contents):
        try:
            decoded = _decode(content, mode)
        except Rejected as exc:
            reasons[i] = str(exc)
            continue
        height, width = decoded.shape[:2]
        if mode == "exact" and (height, width) != IMAGE_SIZE and height * width <= _BATCH_MAX_PIXELS:
            pending.add(len(valid), decoded)
        else:
            try:
                pixels[len(valid)] = resize(decoded, mode)
            except (OSError, ValueError, cv2.error) as exc:
                reasons[i] = f"corrupt or truncated image ({exc})"
                continue
        valid.append(i)
    pending.flush()
    return pixels[: len(valid)], valid, reasons


def resize(pixels: np.ndarray, mode: str = "exact") -> np.ndarray:
    """One HxWx3 uint8 image to 224x224x3: Pillow's bicubic ("exact") or OpenCV's ("fast")."""
    _check_mode(mode)
    height, width = pixels.shape[:2]
    if (height, width) == IMAGE_SIZE:
        return pixels
    if mode == "exact":
        img = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
        return np.asarray(img.resize(IMAGE_SIZE[::-1], Image.Resampling.BICUBIC))
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


class _Pending:
    """Decoded images waiting to be resized together with others of their size, by output slot."""

    def __init__(self, out: np.ndarray) -> None:
        self.out = out
        self.groups: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
        self.count = 0

    def add(self, slot: int, pixels: np.ndarray) -> None:
        group = self.groups.setdefault(pixels.shape[:2], [])
        group.append((slot, pixels))
        self.count += 1
        if len(group) == _CHUNK:
            self._resize(self.groups.pop(pixels.shape[:2]))
        elif self.count >= _MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        for group in self.groups.values():
            self._resize(group)
        self.groups.clear()

    def _resize(self, group: list[tuple[int, np.ndarray]]) -> None:
        self.count -= len(group)
        plan = _plan_for(group[0][1].shape[:2], len(group))
        if plan is None:
            for slot, pixels in group:
                self.out[slot] = resize(pixels, "exact")
        else:
            plan.resize([pixels for _, pixels in group], [self.out[slot] for slot, _ in group])


def _plan_for(shape: tuple[int, int], images: int) -> _ExactPlan | None:
    """The vectorised plan for a group of `images` images of `shape`, or None: Pillow then."""
    plan = _PLANS.get(shape)
    if plan is None and len(_PLANS) < _MAX_PLANS:
        seen = _SEEN[shape] = _SEEN.get(shape, 0) + images
        if seen >= _PLAN_AFTER:
            plan = _PLANS[shape] = _ExactPlan(*shape)
        elif len(_SEEN) > 100_000:  # many sizes: forget the counts, not the plans
            _SEEN.clear()
    return plan if plan is not None and plan.verified and images > 1 else None


class _ExactPlan:
    """Pillow's bicubic resize of HxW RGB images to 224x224, vectorised over same-size images.

    Pillow (Resample.c, 8 bits per channel) resamples in two passes, rows then columns (Pillow 13
    does columns first when the height shrinks by more than twice as many pixels as the width:
    `vertical_first`). Each pass takes, per output pixel, the weights of the bicubic filter
    (a = -0.5, support 2 x max(scale, 1)) at the input pixels it covers, normalised to sum 1,
    scaled by 2^22 and rounded half away from zero to integers k; the output is
    clip8((sum(k * p) + 2^21) >> 22), a uint8 again before the next pass.

    Here the weights times 2^-22 are float64 matrices and each pass is a few matrix products over
    all images at once (BLAS): 8-bit pixels times 23-bit weights, summed, stay far below 2^53, so
    float64 computes them exactly. The outputs are cut into blocks that each multiply only the
    input window their weights touch (the bicubic covers ~5 input pixels of 100). One OpenCV
    call per pass rounds and saturates: uint8(round_half_even(s + 2^-23)) equals Pillow's
    (sum + 2^21) >> 22 clipped, as s + 2^-23 is never a tie.

    A plan checks itself against Pillow on a noise image of its size (`verified`); a size where
    they differ (another Pillow version) is left to Pillow.
    """

    ROW_BLOCK = 8  # output columns per product in the horizontal pass
    COLUMN_BLOCK = 8  # output rows per product in the vertical pass

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self._local = threading.local()  # per-thread buffers (_buffer)
        out_height, out_width = IMAGE_SIZE
        passes = []
        if width != out_width:
            weights = pillow_bicubic_weights(width, out_width)  # (out_width, width)
            blocks = [
                (o0, o1, lo, hi, np.ascontiguousarray(weights[o0:o1, lo:hi].T))
                for o0, o1, lo, hi in _windows(weights, self.ROW_BLOCK)
            ]
            passes.append((self._horizontal, blocks))
        if height != out_height:
            weights = pillow_bicubic_weights(height, out_height)  # (out_height, height)
            blocks = [
                (o0, o1, lo, hi, np.ascontiguousarray(weights[o0:o1, lo:hi]))
                for o0, o1, lo, hi in _windows(weights, self.COLUMN_BLOCK)
            ]
            passes.append((self._vertical, blocks))
        if len(passes) == 2 and vertical_first(height, width):
            passes.reverse()
        self.passes = passes
        probe = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        ours = np.empty((*IMAGE_SIZE, 3), np.uint8)
        self.resize([probe], [ours])
        self.verified = bool(np.array_equal(ours, resize(probe, "exact")))

    def resize(self, images: list[np.ndarray], outs: list[np.ndarray]) -> None:
        """Resize HxWx3 uint8 `images` into the 224x224x3 uint8 arrays `outs`."""
        for start in range(0, len(images), _CHUNK):
            self._resize_chunk(images[start : start + _CHUNK], outs[start : start + _CHUNK])

    def _resize_chunk(self, images: list[np.ndarray], outs: list[np.ndarray]) -> None:
        # Channel planes, rows outermost: (rows, image, channel, columns), as float64.
        shape = [self.height, len(images), 3, self.width]
        planes = self._buffer("planes", shape, np.float64)
        for i, image in enumerate(images):
            for c, plane in enumerate(cv2.split(image)):
                planes[:, i, c] = plane
        for number, (resample, blocks) in enumerate(self.passes):
            resampled = resample(planes, blocks, shape)  # uint8, `shape` updated
            if number + 1 < len(self.passes):
                planes = self._buffer("widened", shape, np.float64)
                np.copyto(planes, resampled)
        for i, out in enumerate(outs):
            cv2.merge([resampled[:, i, c] for c in range(3)], dst=out)

    def _horizontal(self, planes: np.ndarray, blocks: list, shape: list[int]) -> np.ndarray:
        rows = planes.reshape(-1, shape[3])
        shape[3] = IMAGE_SIZE[1]
        summed = self._buffer("summed", [rows.shape[0], shape[3]], np.float64)
        for o0, o1, lo, hi, weights in blocks:
            np.matmul(rows[:, lo:hi], weights, out=summed[:, o0:o1])
        return _round_clip8(summed, self._buffer("horizontal", [rows.shape[0], shape[3]], np.uint8)).reshape(shape)

    def _vertical(self, planes: np.ndarray, blocks: list, shape: list[int]) -> np.ndarray:
        columns = planes.reshape(shape[0], -1)
        shape[0] = IMAGE_SIZE[0]
        out = self._buffer("vertical", [shape[0], columns.shape[1]], np.uint8)
        block = self._buffer("block", [self.COLUMN_BLOCK, columns.shape[1]], np.float64)
        for o0, o1, lo, hi, weights in blocks:
            np.matmul(weights, columns[lo:hi], out=block[: o1 - o0])
            _round_clip8(block[: o1 - o0], out[o0:o1])
        return out.reshape(shape)

    def _buffer(self, name: str, shape: list[int], dtype: type) -> np.ndarray:
        """A reused buffer: fresh multi-MB arrays cost page faults (up to 3x the time here)."""
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        size = int(np.prod(shape))
        if name not in buffers or buffers[name].size < size:
            buffers[name] = np.empty(size, dtype)
        return buffers[name][:size].reshape(shape)


def vertical_first(height: int, width: int) -> bool:
    """Whether Pillow 13 resizes HxW to 224x224 columns first (Pillow PR 9549).

    It does when the height shrinks by more than twice as many pixels as the width does: found by
    comparing Pillow's output with both orders on ~450 sizes; a plan's self-check catches a
    Pillow that decides otherwise.
    """
    return height - IMAGE_SIZE[0] > 2 * max(width - IMAGE_SIZE[1], 0)


def _round_clip8(sums: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float64 sums s = sum(k * p) / 2^22 to Pillow's clip8((sum + 2^21) >> 22) as uint8."""
    return cv2.add(sums, 2.0 ** -(_PRECISION_BITS + 1), dst=out, dtype=cv2.CV_8U)


def _windows(weights: np.ndarray, block: int) -> list[tuple[int, int, int, int]]:
    """Blocks of `block` output pixels [o0, o1) with the input window [lo, hi) of their weights."""
    windows = []
    for o0 in range(0, weights.shape[0], block):
        o1 = min(o0 + block, weights.shape[0])
        used = np.flatnonzero(np.any(weights[o0:o1] != 0, axis=0))
        lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
        windows.append((o0, o1, lo, hi))
    return windows


def _bicubic(x: float) -> float:
    """Pillow's bicubic_filter (a = -0.5), the same double operations in the same order."""
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def pillow_bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's fixed-point bicubic weights (precompute_coeffs + normalize_coeffs_8bpc) x 2^-22.

    Returns an (out_size, in_size) float64 matrix; row j holds output pixel j's weights.
    """
    scale = filterscale = float(in_size) / out_size
    if filterscale < 1.0:
        filterscale = 1.0
    support = 2.0 * filterscale
    ss = 1.0 / filterscale
    one = 1 << _PRECISION_BITS
    matrix = np.zeros((out_size, in_size), np.float64)
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as C does
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ws = [_bicubic((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in ws:
            ww += w
        for x, w in enumerate(ws):
            if ww != 0.0:
                w = w / ww
            fixed = int(-0.5 + w * one) if w < 0 else int(0.5 + w * one)
            matrix[xx, xmin + x] = fixed / one
    return matrix
