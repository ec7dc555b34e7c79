"""Synthetic labelled images (coloured shapes on white), so demos and calibration need no download."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220)}
SIZE = 100


def draw_shape(shape: str, colour: tuple[int, int, int], rng: random.Random) -> Image.Image:
    """One 100x100 image: a shape of random size and position, slightly jittered colour."""
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    r = rng.randint(18, 40)
    cx, cy = rng.randint(r, SIZE - r), rng.randint(r, SIZE - r)
    fill = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in colour)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def synthetic_batch(n: int, seed: int = 0) -> list[Image.Image]:
    """n deterministic images cycling through every shape and colour."""
    rng = random.Random(seed)
    classes = [(s, c) for s in SHAPES for c in COLOURS]
    return [draw_shape(s, COLOURS[c], rng) for s, c in (classes[i % len(classes)] for i in range(n))]


def write_dataset(root: Path, per_class: int = 10, seed: int = 0) -> int:
    """Write JPEGs as root/<colour shape>/<n>.jpg (labels are folder names); return the count."""
    rng = random.Random(seed)
    count = 0
    for shape in SHAPES:
        for name, colour in COLOURS.items():
            folder = root / f"{name} {shape}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                draw_shape(shape, colour, rng).save(folder / f"{i:04d}.jpg", quality=90)
                count += 1
    return count
