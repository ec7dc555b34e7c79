"""Pillow's bicubic resize, bit for bit, compiled: the seed's pixels at a fraction of Pillow's cost.

The seed resized with `Image.resize((224, 224))`: Pillow's bicubic (a = -0.5) in fixed point
(Resample.c). Pillow takes ~0.7-0.8 ms for a 100x100 image here, 7-9 % of ONNX Runtime's time per
image, against a budget of 5 % for decode and resize together (issue 12). The same arithmetic
compiled by numba (job/resize_kernels.py: int32 sums vectorised over whole rows) takes ~0.1 ms
and gives the same bytes (tests/job/test_decode.py). An earlier numpy/BLAS version (float64 block
products) was fast on an AVX-512 host and slower than Pillow on an AVX2 one; integer loops do not
depend on the BLAS build.

A size gets a plan (its fixed-point weights, the order of the passes) at its second image, and a
plan checks itself against Pillow on a noise image of its size before it is used: a Pillow that
computes differently (another version) keeps its own resize. Pillow also resizes whenever numba is
missing or cannot compile (same pixels, slower; `status()` says which), sizes beyond _MAX_PLANS,
and images over _MAX_KERNEL_PIXELS.

Compiled code is cached in $FEATURIZER_CACHE_DIR/numba (default ~/.cache/featurizer/numba; a
user's NUMBA_CACHE_DIR wins): a new Python worker loads it in ~0.1 s instead of compiling for ~2 s.
numba caches by source file, which a job shipped as a zip does not have, so the kernels' source is
then written there once and loaded from that copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pkgutil
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

from job.config import local_cache_root

# Pillow's Resample.c: coefficients in fixed point with 22 fractional bits.
_PRECISION_BITS = 22
# A size gets a plan once this many images of it were seen in this process (the first ones go
# through Pillow), and at most _MAX_PLANS sizes get one.
_PLAN_AFTER = 2
_MAX_PLANS = 256
# Bigger images go through Pillow (the kernels hold two swapped copies of the image).
_MAX_KERNEL_PIXELS = 25_000_000
_KERNEL_MODULE = "job.resize_kernels"
_COMPILED_NAME = "featurizer_compiled_resize_kernels"  # the module numba compiles (a copy)

_PLANS: dict[tuple[int, int, int, int], _Plan] = {}
_SEEN: dict[tuple[int, int, int, int], int] = {}
_LOCK = threading.RLock()
_KERNELS: list = []  # [module or None, status]: loaded once per process, by _kernels()


def resize_into(image: np.ndarray, dst: np.ndarray) -> None:
    """Pillow's `Image.fromarray(image).resize((OW, OH))` of an (H, W, 3) uint8 image into (OH, OW, 3) `dst`."""
    height, width = image.shape[:2]
    if (height, width) == dst.shape[:2]:
        dst[...] = image
        return
    plan = _plan_for(height, width, *dst.shape[:2])
    if plan is None or not dst.flags.c_contiguous:
        dst[...] = pillow_resize(image, dst.shape[:2])
        return
    plan.run(np.ascontiguousarray(image, dtype=np.uint8), dst)


def pillow_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow itself: (H, W, 3) uint8 to `size` (height, width)."""
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return np.asarray(img.resize(size[::-1], Image.Resampling.BICUBIC))


def status() -> str:
    """How exact resizes run in this process: compiled (cached or not), or Pillow and why."""
    return _kernels()[1]


class _Plan:
    """One input size's weights and pass order, checked against Pillow before use (`verified`)."""

    def __init__(self, kernels: ModuleType, height: int, width: int, out_height: int, out_width: int) -> None:
        self.kernels = kernels
        self.out_shape = (out_height, out_width, 3)
        self.h_args = _fixed_point(width, out_width)
        self.v_args = _fixed_point(height, out_height)
        if width == out_width:
            self.order = kernels.VERTICAL
        elif height == out_height:
            self.order = kernels.HORIZONTAL
        elif vertical_first(height, width, out_height, out_width):
            self.order = kernels.VERTICAL_THEN_HORIZONTAL
        else:
            self.order = kernels.HORIZONTAL_THEN_VERTICAL
        probe = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        ours = np.empty(self.out_shape, np.uint8)
        try:
            self.run(probe, ours)
            self.verified = bool(np.array_equal(ours, pillow_resize(probe, (out_height, out_width))))
        except Exception as exc:  # a compile failure: Pillow for this size, and say why once
            warnings.warn(f"compiled exact resize failed ({type(exc).__name__}: {exc}); using Pillow", stacklevel=2)
            self.verified = False

    def run(self, image: np.ndarray, dst: np.ndarray) -> None:
        self.kernels.resize(image, self.order, *self.h_args, *self.v_args, dst)


def _plan_for(height: int, width: int, out_height: int, out_width: int) -> _Plan | None:
    if height * width > _MAX_KERNEL_PIXELS:
        return None
    key = (height, width, out_height, out_width)
    plan = _PLANS.get(key)
    if plan is None:
        with _LOCK:
            plan = _PLANS.get(key)
            if plan is None and len(_PLANS) < _MAX_PLANS:
                seen = _SEEN[key] = _SEEN.get(key, 0) + 1
                kernels = _kernels()[0] if seen >= _PLAN_AFTER else None
                if kernels is not None:
                    plan = _PLANS[key] = _Plan(kernels, *key)
                elif len(_SEEN) > 100_000:  # many sizes: forget the counts, not the plans
                    _SEEN.clear()
    return plan if plan is not None and plan.verified else None


def _fixed_point(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's int32 weights per output pixel, packed: (weights (out, max taps), first input, taps)."""
    matrix = np.rint(pillow_bicubic_weights(in_size, out_size) * (1 << _PRECISION_BITS)).astype(np.int64)
    first = np.zeros(out_size, np.int32)
    taps = np.zeros(out_size, np.int32)
    for o in range(out_size):
        used = np.flatnonzero(matrix[o])
        if len(used):
            first[o], taps[o] = used[0], used[-1] - used[0] + 1
    weights = np.zeros((out_size, max(int(taps.max()), 1)), np.int32)
    for o in range(out_size):
        weights[o, : taps[o]] = matrix[o, first[o] : first[o] + taps[o]]
    return weights, first, taps


def vertical_first(height: int, width: int, out_height: int = 224, out_width: int = 224) -> bool:
    """Whether Pillow 13 resizes columns first (Pillow PR 9549).

    It does when the height shrinks by more than twice as many pixels as the width does: found by
    comparing Pillow's output with both orders on ~450 sizes to 224x224; a plan's self-check
    catches a Pillow that decides otherwise.
    """
    return height - out_height > 2 * max(width - out_width, 0)


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


def _kernels() -> tuple[ModuleType | None, str]:
    """The compiled kernels module (or None) and a line saying how; loaded once per process."""
    if not _KERNELS:
        with _LOCK:
            if not _KERNELS:
                _KERNELS.extend(_load_kernels())
    return _KERNELS[0], _KERNELS[1]


def _load_kernels() -> tuple[ModuleType | None, str]:
    try:
        import numba
    except ImportError as exc:
        return None, f"Pillow (numba is not installed: {exc})"
    if not os.environ.get("NUMBA_CACHE_DIR"):
        numba.config.CACHE_DIR = os.path.join(local_cache_root(), "numba")
    module, cacheable = _kernel_source_module()
    cached = True
    for name in module.COMPILED:
        function = getattr(module, name)
        try:
            compiled = numba.njit(cache=cacheable, nogil=True)(function)
        except RuntimeError:  # no writable cache location: compile in memory
            compiled, cached = numba.njit(nogil=True)(function), False
        setattr(module, name, compiled)
    where = f"cached in {numba.config.CACHE_DIR}" if cacheable and cached else "not cached"
    return module, f"numba {numba.__version__} ({where})"


def _kernel_source_module() -> tuple[ModuleType, bool]:
    """A fresh copy of job.resize_kernels loaded from a real source file if possible (numba's cache needs one).

    From a zip, the source is written to <numba cache>/src/<digest>/ (atomically; concurrent workers
    write the same bytes) and loaded from there. The module is loaded anew, not imported, so the
    compiled functions never replace the plain ones that `import job.resize_kernels` gives.
    """
    spec = importlib.util.find_spec(_KERNEL_MODULE)
    if spec is None:
        raise ImportError(f"{_KERNEL_MODULE} is missing from the job's package")
    if spec.origin and os.path.isfile(spec.origin):
        return _module_from(Path(spec.origin).read_bytes(), spec.origin), True
    source = pkgutil.get_data("job", "resize_kernels.py")
    if source is None:
        raise ImportError(f"cannot read the source of {_KERNEL_MODULE} from {spec.origin}")
    import numba

    from job.onnx_engine import write_atomically  # here: job.onnx_engine imports job.decode, which imports us

    target = Path(numba.config.CACHE_DIR) / "src" / hashlib.sha256(source).hexdigest()[:16] / "resize_kernels.py"
    try:
        if not target.is_file() or target.read_bytes() != source:
            write_atomically(target, source)
        return _module_from(source, str(target)), True
    except OSError:  # an unwritable cache: compile from the zip's source, in memory
        return _module_from(source, str(spec.origin)), False


def _module_from(source: bytes, filename: str) -> ModuleType:
    """A new module of `source` whose functions name `filename` as their file (numba's cache key),
    registered in sys.modules under its own name: numba's cache refers to the module by that name."""
    module = ModuleType(_COMPILED_NAME)
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    sys.modules[_COMPILED_NAME] = module
    return module
