"""The job's arguments, parsed once into a frozen, validated JobConfig.

Everything that can be checked without Spark is checked here, so a bad argument fails in
milliseconds with exit code 2 instead of after a JVM start-up.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from job.errors import UsageError  # defined with the other errors; importable from here too

FEATURE_DIM = 1280
# Hadoop glob (as Spark's pathGlobFilter reads it): .jpg and .jpeg in any letter case.
DEFAULT_GLOB = "*.{[jJ][pP][gG],[jJ][pP][eE][gG]}"
WEIGHT_KEYWORDS = ("imagenet", "random")
ENGINES = ("tf", "onnx", "onnx-int8")
# Engines that run an ONNX model (onnx-int8: the fp32 model statically quantized, job/quantize.py).
ONNX_ENGINES = ("onnx", "onnx-int8")
# "exact": the seed's pixels (Pillow's bicubic); "fast": OpenCV's resize, other pixels (job/decode.py).
RESIZE_MODES = ("exact", "fast")
# The machine-local cache (converted models, compiled resize kernels): $FEATURIZER_CACHE_DIR, else
# ~/.cache/featurizer.
CACHE_ENV = "FEATURIZER_CACHE_DIR"


def local_cache_root() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "featurizer")


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
    # onnx-int8: where the calibration images come from (None: --input) and how many (job/quantize.py).
    calibration: str | None = None
    calibration_images: int = 256
    reuse: str | None = None  # a previous output whose unchanged images keep their features (job/reuse.py)
    model_cache: str | None = None  # a shared folder/URI for converted and quantized models (job/model_cache.py)
    # How the run talks, not what it computes: no progress lines (--quiet), full traces and
    # Spark's own log on stderr (--verbose).
    quiet: bool = False
    verbose: bool = False
    dry_run: bool = False  # list, account and plan only: no model, nothing written (job/dryrun.py)

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
        if not 1 <= self.calibration_images <= 10_000:
            raise UsageError(f"--calibration-images must be between 1 and 10000, got {self.calibration_images}")
        if self.calibration is not None and self.engine != "onnx-int8":
            raise UsageError("--calibration needs --engine onnx-int8")
        if self.threads < 0:
            raise UsageError(f"--threads must be >= 0, got {self.threads}")
        if self.reuse is not None and (not self.reuse or _norm(self.reuse) == _norm(self.input)):
            raise UsageError("--reuse must name a previous output (not --input)")
        if self.shared_model_cache is not None:
            cache = _norm(self.shared_model_cache)
            if not cache:
                raise UsageError("--model-cache must not be empty")
            for name, folder in (("--input", self.input), ("--output", self.output)):
                if cache == _norm(folder) or cache.startswith(_norm(folder) + "/"):
                    raise UsageError(f"--model-cache must be a folder of its own, not {name} or inside it")
        if not self.glob:
            raise UsageError("--glob must not be empty")
        if not self.weights:
            raise UsageError("--weights must be imagenet, random, or a path/URI to a weights file")
        if self.weights.lower().endswith(".onnx") and self.engine not in ONNX_ENGINES:
            raise UsageError("an .onnx model needs --engine onnx (or onnx-int8)")

    @property
    def shared_model_cache(self) -> str | None:
        """--model-cache, or None when not given or given as `none` (a deployment's default turned off)."""
        return None if self.model_cache in (None, "none") else self.model_cache


def _norm(uri: str) -> str:
    return uri.rstrip("/")


@dataclass(frozen=True)
class Option:
    """One job option, defined once: the job's argparse (spark-submit) and `featurizer run` (click) are
    both generated from :data:`OPTIONS`, so flags, defaults, choices and help cannot drift apart."""

    name: str  # the JobConfig field; the flag is --name with "-" for "_"
    help: str
    type: type = str
    default: object = None
    choices: tuple[str, ...] | None = None
    required: bool = False
    is_flag: bool = False  # a switch (store_true)
    exclusive: str | None = None  # options sharing this group name may not be combined

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("input", "folder or Hadoop URI (s3://... on EMR) of images in class folders", required=True),
    Option("output", "folder or Hadoop URI for the results (must not be inside --input)", required=True),
    Option(
        "weights",
        "imagenet (Keras download on the driver), random (seeded, offline demos/tests only), or a path/URI "
        "of a MobileNetV2 no-top weights file (.h5 / .weights.h5) or an exported .onnx model (--engine onnx)",
        default="imagenet",
    ),
    Option(
        "variance",
        "keep the fewest PCA components explaining at least this share, in (0, 1]",
        float,
        0.99,
        exclusive="pca",
    ),
    Option("k", f"force this many PCA components (1..{FEATURE_DIM}) instead of --variance", int, exclusive="pca"),
    Option("batch_size", "images per model call and per Arrow batch of the featurize stage (bounds memory)", int, 64),
    Option("glob", "Hadoop glob on file names (.jpg/.jpeg in any letter case)", default=DEFAULT_GLOB),
    Option("master", "Spark master, e.g. local[*] [default: spark-submit's, else local[*]]"),
    Option(
        "engine",
        "inference engine: tf (Keras), onnx (ONNX Runtime, ~2x faster) or onnx-int8 (statically quantized, "
        "~2x faster than onnx, approximate features: see the README)",
        default="tf",
        choices=ENGINES,
    ),
    Option("calibration", "onnx-int8: folder/URI of calibration images [default: --input]"),
    Option("calibration_images", "onnx-int8: calibration images, evenly spaced over the sorted paths", int, 256),
    Option("threads", "inference threads per Python worker (0: the task's cores)", int, 0),
    Option(
        "resize",
        "exact: the seed's pixels (Pillow bicubic); fast: OpenCV, other pixels and features",
        default="exact",
        choices=RESIZE_MODES,
    ),
    Option(
        "reuse",
        "a previous complete output (may equal --output): images with the same path, size and modification "
        "time keep its features; the rest are featurized and the PCA is refit on all",
    ),
    Option(
        "model_cache",
        "folder or Hadoop URI (s3://... on EMR) where converted and quantized ONNX models are kept and looked "
        "up by digest, beside this machine's cache: runs on any cluster then convert/quantize once "
        "(none: no shared cache)",
    ),
    Option(
        "dry_run",
        "list, account and plan without loading the model: print how many images would be featurized and "
        "rejected (and why) and the planned partitions; write nothing",
        is_flag=True,
    ),
    Option("quiet", "no progress lines (warnings, errors and the summary only)", is_flag=True, exclusive="talk"),
    Option(
        "verbose",
        "full traces and Spark's warnings on stderr (default: in the log file)",
        is_flag=True,
        exclusive="talk",
    ),
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The job's own parser (``python -m job``, spark-submit's entry point), generated from OPTIONS."""
    p = _Parser(
        prog="featurizer run",
        description="MobileNetV2 features + StandardScaler + PCA for a folder of labelled images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for opt in OPTIONS:
        target = groups.setdefault(opt.exclusive, p.add_mutually_exclusive_group()) if opt.exclusive else p
        if opt.is_flag:
            target.add_argument(opt.flag, action="store_true", help=opt.help)
        else:
            kwargs = {"type": opt.type, "default": opt.default, "help": opt.help}
            if opt.choices:
                kwargs["choices"] = opt.choices
            target.add_argument(opt.flag, required=opt.required, **kwargs)
    return p


def from_argv(argv: list[str]) -> JobConfig:
    ns = build_parser().parse_args(argv)
    return JobConfig(**{opt.name: getattr(ns, opt.name) for opt in OPTIONS})
