"""`featurizer demo`: the embedded default run, with no download and no AWS.

Generates a small set of synthetic labelled images and featurizes them with local Spark and
seeded random weights (so it works offline), then prints where everything went. The command line
is `launcher/cli.py`'s (one CLI style); this module is what it runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from job.samples import write_dataset


def run_demo(output: Path, *, per_class: int = 12, weights: str = "random", master: str = "local[*]") -> int:
    """Write the images under OUTPUT/images, featurize them into OUTPUT/results; the job's exit code."""
    root = Path(output).resolve()
    images, results = root / "images", root / "results"
    if images.exists():
        shutil.rmtree(images)
    count = write_dataset(images, per_class=per_class)
    print(f"demo: wrote {count} synthetic images in 9 class folders under {images}", flush=True)
    from job.__main__ import main as run_job

    code = run_job(["--input", str(images), "--output", str(results), "--weights", weights, "--master", master])
    if code == 0:
        print(f"demo: plot {results / 'explained_variance.png'}; metadata {results / 'metadata.json'}", flush=True)
    return code
