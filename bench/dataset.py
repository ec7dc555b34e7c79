"""The bench's inputs: the real sample images repeated under distinct paths, and test weights.

Images are hard-linked (copied across file systems) into a temporary folder, never into the
repository, with the class folder kept so labels stay those of the originals.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FRUITS = SHARED_DATA / "fruits360-sample" / "Test"
if not FRUITS.is_dir():  # a fresh clone: the 100 images vendored with the tests
    FRUITS = Path(__file__).resolve().parents[1] / "tests" / "data" / "fruits360" / "Test"
WEIGHTS_SEED = 7  # the seed of tests/conftest.py:weights_file (calibrated there on the 100 vendored images)


def source_images(root: Path = FRUITS) -> list[Path]:
    images = sorted(root.rglob("*.jpg"))
    if not images:
        raise FileNotFoundError(f"no sample images under {root}")
    return images


def make_image_set(dest: Path, n: int, sources: list[Path]) -> Path:
    """`n` images under `dest/<class>/r<repeat>_<name>`: the sources cycled, every path distinct."""
    for i in range(n):
        repeat, index = divmod(i, len(sources))
        src = sources[index]
        target = dest / src.parent.name / f"r{repeat:03d}_{src.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
    return dest


def make_weights(path: Path, sources: list[Path]) -> Path:
    """MobileNetV2 with seeded random weights, BatchNorm calibrated on 64 real images.

    ImageNet weights cannot be downloaded here; calibrated random weights cost the same to run
    and give well-scaled features (raw random initialisation gives ~1e-11).
    """
    from job.decode import decode_batch
    from job.model import random_model

    batch, _, _ = decode_batch([p.read_bytes() for p in sources[::12][:64]])
    path.parent.mkdir(parents=True, exist_ok=True)
    random_model(batch, seed=WEIGHTS_SEED).save_weights(str(path))
    return path
