"""Pillow's 8-bit resampling passes (Resample.c), as loops that numba compiles (job.exact_resize).

Plain Python over numpy arrays, importable without numba: job.exact_resize compiles these
functions (nopython, no GIL) and caches the machine code beside the converted models. Kept in a
module of their own because numba caches compiled code per source file, and a job shipped as a
zip (spark-submit --py-files) has no source file: job.exact_resize then writes this file out once.

Only `resample_rows` and `swap_axes` are compiled (~0.7 s the first time, against ~6 s when the
glue below was compiled too); the glue runs in Python, a few microseconds per image.

Each pass is Pillow's arithmetic exactly: int32 sums of 8-bit pixels times fixed-point weights
(22 fractional bits) starting from 2^21, shifted right by 22 and clipped to 0..255. Written as
row operations (an output row is a weighted sum of a few input rows) so the compiler vectorises
the inner loop; the horizontal pass runs on the image with rows and columns swapped.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray
HORIZONTAL, VERTICAL, HORIZONTAL_THEN_VERTICAL, VERTICAL_THEN_HORIZONTAL = 0, 1, 2, 3


def resample_rows(src: Array, weights: Array, first: Array, taps: Array, dst: Array) -> None:
    """dst[o] = clip8((2^21 + sum_t weights[o, t] * src[first[o] + t]) >> 22) for each output row o.

    src: (n_in, L) uint8; weights: (n_out, max taps) int32; first, taps: (n_out,) int32.
    """
    length = src.shape[1]
    acc = np.empty(length, np.int32)
    for o in range(dst.shape[0]):
        for j in range(length):
            acc[j] = np.int32(1 << 21)
        for t in range(taps[o]):
            k = np.int32(weights[o, t])
            row = src[first[o] + t]
            for j in range(length):
                acc[j] = np.int32(acc[j] + np.int32(np.int32(row[j]) * k))
        for j in range(length):
            v = acc[j] >> 22
            dst[o, j] = np.uint8(0 if v < 0 else (255 if v > 255 else v))


def swap_axes(src: Array, dst: Array) -> None:
    """(A, B, 3) -> (B, A, 3)."""
    for a in range(src.shape[0]):
        for b in range(src.shape[1]):
            for c in range(3):
                dst[b, a, c] = src[a, b, c]


def horizontal(src: Array, weights: Array, first: Array, taps: Array, dst: Array) -> None:
    """(h, W, 3) -> (h, OW, 3): resample_rows on the swapped image, swapped back."""
    height, width = src.shape[0], src.shape[1]
    out_width = dst.shape[1]
    swapped = np.empty((width, height, 3), np.uint8)
    swap_axes(src, swapped)
    resampled = np.empty((out_width, height, 3), np.uint8)
    resample_rows(swapped.reshape(width, height * 3), weights, first, taps, resampled.reshape(out_width, height * 3))
    swap_axes(resampled, dst)


def vertical(src: Array, weights: Array, first: Array, taps: Array, dst: Array) -> None:
    """(H, w, 3) -> (OH, w, 3)."""
    width = src.shape[1]
    resample_rows(src.reshape(src.shape[0], width * 3), weights, first, taps, dst.reshape(dst.shape[0], width * 3))


def resize(
    image: Array,
    order: int,
    h_weights: Array,
    h_first: Array,
    h_taps: Array,
    v_weights: Array,
    v_first: Array,
    v_taps: Array,
    dst: Array,
) -> None:
    """A C-contiguous (H, W, 3) uint8 image into the C-contiguous (OH, OW, 3) uint8 `dst`, in `order`."""
    height, width = image.shape[0], image.shape[1]
    out_height, out_width = dst.shape[0], dst.shape[1]
    if order == HORIZONTAL:
        horizontal(image, h_weights, h_first, h_taps, dst)
    elif order == VERTICAL:
        vertical(image, v_weights, v_first, v_taps, dst)
    elif order == HORIZONTAL_THEN_VERTICAL:
        middle = np.empty((height, out_width, 3), np.uint8)
        horizontal(image, h_weights, h_first, h_taps, middle)
        vertical(middle, v_weights, v_first, v_taps, dst)
    else:
        middle = np.empty((out_height, width, 3), np.uint8)
        vertical(image, v_weights, v_first, v_taps, middle)
        horizontal(middle, h_weights, h_first, h_taps, dst)


# The functions job.exact_resize compiles (and rebinds in its copy of this module, so the glue
# calls the compiled ones).
COMPILED = ("resample_rows", "swap_axes")
