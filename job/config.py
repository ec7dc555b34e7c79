"""The job's arguments, parsed once into a frozen, validated JobConfig.

Everything that can be checked without Spark is checked here, so a bad argument fails in
milliseconds with exit code 2 instead of after a JVM start-up.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from job.errors import UsageError  # defined with the other errors; importable from here too

FEATURE_DIM = 1280
# Hadoop glob (as Spark's pathGlobFilter reads it): .jpg and .jpeg in any letter case.
DEFAULT_GLOB = "*.{[jJ][pP][gG],[jJ][pP][eE][gG]}"
WEIGHT_KEYWORDS = ("imagenet", "random")
ENGINES = ("tf", "onnx")
# "exact": the seed's pixels (Pillow's bicubic); "fast": OpenCV's resize, other pixels (job/decode.py).
RESIZE_MODES = ("exact", "fast")


@dataclass(frozen=True)
class JobConfig:
    input: str
    output: str
    weights: str = "imagenet"
    variance: float = 0.99
    k: int | None = None
    batch_size: int = 64
    glob: str = DEFAULT_GLOB
    master: str | None = None
    engine: str = "tf"
    threads: int = 0  # TensorFlow/ONNX threads per Python worker; 0 = the task's share of the executor
    resize: str = "exact"
    # How the run talks, not what it computes: no progress lines (--quiet), full traces and
    # Spark's own log on stderr (--verbose).
    quiet: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        if not self.input:
            raise UsageError("--input must not be empty")
        if not self.output:
            raise UsageError("--output must not be empty")
        if _norm(self.input) == _norm(self.output):
            raise UsageError("--output must differ from --input")
        if _norm(self.output).startswith(_norm(self.input) + "/"):
            raise UsageError("--output must not be inside --input (the output would be read as input)")
        if not 0.0 < self.variance <= 1.0:
            raise UsageError(f"--variance must be in (0, 1], got {self.variance}")
        if self.k is not None and not 1 <= self.k <= FEATURE_DIM:
            raise UsageError(f"--k must be between 1 and {FEATURE_DIM}, got {self.k}")
        if not 1 <= self.batch_size <= 1024:
            raise UsageError(f"--batch-size must be between 1 and 1024, got {self.batch_size}")
        if self.engine not in ENGINES:
            raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"--resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.threads < 0:
            raise UsageError(f"--threads must be >= 0, got {self.threads}")
        if not self.glob:
            raise UsageError("--glob must not be empty")
        if not self.weights:
            raise UsageError("--weights must be imagenet, random, or a path/URI to a weights file")
        if self.weights.lower().endswith(".onnx") and self.engine != "onnx":
            raise UsageError("an .onnx model needs --engine onnx")

    @property
    def weights_is_file(self) -> bool:
        return self.weights not in WEIGHT_KEYWORDS


def _norm(uri: str) -> str:
    return uri.rstrip("/")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="featurizer run",
        description="MobileNetV2 features + StandardScaler + PCA for a folder of labelled images.",
    )
    p.add_argument("--input", required=True, help="folder or Hadoop URI (s3://...) of images in class folders")
    p.add_argument("--output", required=True, help="folder or Hadoop URI for the results")
    p.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (Keras download), random (seeded, offline demos/tests only), "
        "or a path/URI of a MobileNetV2 no-top weights file (.h5 / .weights.h5)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--variance", type=float, default=0.99, help="explained variance target (0, 1]")
    group.add_argument("--k", type=int, default=None, help="force the number of PCA components")
    p.add_argument("--batch-size", type=int, default=64, help="images per model call (bounds memory)")
    p.add_argument("--glob", default=DEFAULT_GLOB, help="Hadoop glob on file names (default: .jpg/.jpeg)")
    p.add_argument("--master", default=None, help="Spark master, e.g. local[*] (default: spark-submit's)")
    p.add_argument("--engine", default="tf", choices=ENGINES, help="inference engine")
    p.add_argument("--threads", type=int, default=0, help="inference threads per worker (0 = auto)")
    p.add_argument(
        "--resize",
        default="exact",
        choices=RESIZE_MODES,
        help="exact: the seed's pixels (Pillow bicubic, default); fast: OpenCV, other pixels and features",
    )
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("--quiet", action="store_true", help="no progress lines (warnings, errors and the summary only)")
    talk.add_argument(
        "--verbose", action="store_true", help="full traces and Spark's warnings on stderr (default: in the log file)"
    )
    return p


def from_argv(argv: list[str]) -> JobConfig:
    ns = build_parser().parse_args(argv)
    return JobConfig(
        input=ns.input,
        output=ns.output,
        weights=ns.weights,
        variance=ns.variance,
        k=ns.k,
        batch_size=ns.batch_size,
        glob=ns.glob,
        master=ns.master,
        engine=ns.engine,
        threads=ns.threads,
        resize=ns.resize,
        quiet=ns.quiet,
        verbose=ns.verbose,
    )
