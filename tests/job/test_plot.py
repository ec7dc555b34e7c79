"""The explained-variance plot zooms to the useful range."""

from __future__ import annotations

import io

import numpy as np

from job.write import explained_variance_png, plot_extent


def test_the_plot_ends_a_little_past_the_rank_or_k() -> None:
    ratios = np.zeros(1280)
    ratios[:99] = np.linspace(2, 1, 99) / np.linspace(2, 1, 99).sum()  # 100 images: rank 99
    assert plot_extent(ratios, k=40) == 99 + 10
    assert plot_extent(ratios, k=200) == 200 + 20  # a forced k beyond the rank stays visible
    assert plot_extent(np.full(1280, 1 / 1280), k=1270) == 1280  # never past the last component
    assert plot_extent(ratios[:3], k=2) == 3


def test_the_png_is_drawn_over_that_range() -> None:
    import matplotlib.image as mpimg

    ratios = np.zeros(1280)
    ratios[:9] = 1 / 9
    png = explained_variance_png(ratios, k=5, target=0.99)
    assert png.startswith(b"\x89PNG")
    assert mpimg.imread(io.BytesIO(png)).shape[:2] == (500, 800)
