"""`featurizer demo`: the embedded default run, with no download and no AWS.

Generates a small set of synthetic labelled images and featurizes them with local Spark and
seeded random weights (so it works offline), then prints where everything went.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from job.samples import write_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="featurizer demo", description=__doc__)
    parser.add_argument("--out", default="demo-output", help="folder for the images and results")
    parser.add_argument("--per-class", type=int, default=12, help="synthetic images per class (9 classes)")
    parser.add_argument("--weights", default="random", help="random (offline) or imagenet / a weights file")
    parser.add_argument("--master", default="local[*]")
    ns = parser.parse_args(argv)
    root = Path(ns.out).resolve()
    images, results = root / "images", root / "results"
    if images.exists():
        shutil.rmtree(images)
    count = write_dataset(images, per_class=ns.per_class)
    print(f"demo: wrote {count} synthetic images in 9 class folders under {images}", flush=True)
    from job.__main__ import main as run_job

    code = run_job(["--input", str(images), "--output", str(results), "--weights", ns.weights, "--master", ns.master])
    if code == 0:
        print(f"demo: plot {results / 'explained_variance.png'}; metadata {results / 'metadata.json'}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
