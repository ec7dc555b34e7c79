"""One typed run spec: what a cluster run of the job is asked to do, turned into the job's argv in one place.

The console step the CDK stack publishes, ``featurizer submit`` and ``featurizer cluster up`` all build a
:class:`RunSpec`, fill what the user left open from the deployment's :class:`RunDefaults` (the staged
weights and the engine of the bootstrap profile) and render it with :meth:`RunSpec.argv`. So a step can
never again run the TensorFlow engine on nodes that only have ONNX Runtime, or download ImageNet weights
on a cluster that had them staged.

Pure Python and neutral: it imports neither the job nor the launcher, so the CDK synth never imports the
job package (architecture: Infra never depends on Job). The job's own parser is passed in as ``check`` by
whoever may import the job (the launcher: ``launcher.submit.job_parser_complaint``), so a typo still fails
in milliseconds on the user's machine rather than after a cluster start-up; the console step the stack
renders is checked by that parser in the tests (tests/infra, tests/emr).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from blueprint import artifacts
from blueprint.errors import RunSpecError
from blueprint.settings import Settings

# The job's engines and weight keywords (job.config is the authority; tests/blueprint keeps these in step).
ENGINES = ("tf", "onnx", "onnx-int8")
WEIGHT_KEYWORDS = ("imagenet", "random")
# A parser's verdict on a job argv: its complaint, or None when it accepts the arguments.
ArgvCheck = Callable[[Sequence[str]], str | None]

# The stack outputs that carry a deployment's run defaults (launcher.stack reads them back).
DEFAULT_WEIGHTS_OUTPUT = "DefaultWeights"
DEFAULT_ENGINE_OUTPUT = "DefaultEngine"
DEFAULT_MODEL_CACHE_OUTPUT = "DefaultModelCache"
# RunSpec's options, in the order argv() renders them (each as --name-with-dashes VALUE).
RENDERED = ("weights", "engine", "batch_size", "variance", "k", "glob", "threads", "resize", "reuse", "model_cache")


def node_local_uri(path: str) -> str:
    """A file on every node as a URI Hadoop reads locally.

    A path without a scheme resolves against ``fs.defaultFS``, which is HDFS on EMR, so the staged
    weights must be named ``file:///...`` explicitly.
    """
    if path.startswith("file:"):
        return path
    if not path.startswith("/"):
        raise RunSpecError(f"a node-local path must be absolute, got {path!r}")
    return "file://" + path


@dataclass(frozen=True)
class RunDefaults:
    """What a deployment fills in when a run leaves it open; ``source`` says where the values came from."""

    weights: str | None = None
    engine: str | None = None
    model_cache: str | None = None
    source: str = "the job's own defaults"

    @classmethod
    def from_settings(cls, settings: Settings, *, bucket: str | None = None, source: str = "cdk.json") -> RunDefaults:
        """Staged weights (as a ``file://`` URI), the onnx engine for the onnx bootstrap profile, and the
        project bucket's shared model cache (``bucket``: its name, where known)."""
        weights = node_local_uri(settings.weights_local_path) if settings.weights_local_path else None
        engine = "onnx" if settings.bootstrap_profile == "onnx" else None
        model_cache = artifacts.s3_uri(bucket, artifacts.MODEL_CACHE_PREFIX) if bucket else None
        return cls(weights=weights, engine=engine, model_cache=model_cache, source=source)

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, str], *, stack: str) -> RunDefaults:
        """The defaults a deployed stack published (empty outputs mean: the job's own default)."""
        weights = outputs.get(DEFAULT_WEIGHTS_OUTPUT) or None
        engine = outputs.get(DEFAULT_ENGINE_OUTPUT) or None
        model_cache = outputs.get(DEFAULT_MODEL_CACHE_OUTPUT) or None
        return cls(weights=weights, engine=engine, model_cache=model_cache, source=f"stack {stack}")

    def outputs(self) -> dict[str, str]:
        """These defaults as stack output values (an empty string where the job's default applies)."""
        return {
            DEFAULT_WEIGHTS_OUTPUT: self.weights or "",
            DEFAULT_ENGINE_OUTPUT: self.engine or "",
            DEFAULT_MODEL_CACHE_OUTPUT: self.model_cache or "",
        }


@dataclass(frozen=True)
class RunSpec:
    """A run's options; ``None`` means "the deployment's default, else the job's"."""

    input: str
    output: str
    weights: str | None = None
    engine: str | None = None
    batch_size: int | None = None
    variance: float | None = None
    k: int | None = None
    glob: str | None = None
    threads: int | None = None
    resize: str | None = None
    reuse: str | None = None  # a previous output (s3://...) whose unchanged images keep their features
    model_cache: str | None = None  # where converted/quantized ONNX models are shared between runs (s3://...)
    extra: tuple[str, ...] = ()  # further job options, passed through verbatim (after `--`)

    def __post_init__(self) -> None:
        if self.engine is not None and self.engine not in ENGINES:
            raise RunSpecError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if any(a == "--master" or a.startswith("--master=") for a in self.extra):
            raise RunSpecError("--master is chosen by the cluster (YARN, from spark-defaults); remove it")
        for name in ("--input", "--output"):
            if any(a == name or a.startswith(name + "=") for a in self.extra):
                raise RunSpecError(f"{name} is given once, as the run's own option; remove it after --")

    def with_defaults(self, defaults: RunDefaults) -> RunSpec:
        """Fill the weights, engine and model cache the user left open from the deployment's defaults.

        An explicit ``--engine`` given after ``--`` counts as given. A staged ``.onnx`` model implies the
        onnx engine whatever the profile, since the job refuses an .onnx file with the tf engine.
        """
        weights = self.weights if self.weights is not None else extra_value(self.extra, "--weights")
        engine = self.engine if self.engine is not None else extra_value(self.extra, "--engine")
        fill: dict[str, str] = {}
        if self.model_cache is None and extra_value(self.extra, "--model-cache") is None and defaults.model_cache:
            fill["model_cache"] = defaults.model_cache
        if weights is None and defaults.weights is not None:
            fill["weights"] = defaults.weights
            weights = defaults.weights
        if engine is None:
            if defaults.engine is not None:
                fill["engine"] = defaults.engine
            elif weights is not None and weights.lower().endswith(".onnx"):
                fill["engine"] = "onnx"
        return dataclasses.replace(self, **fill)

    def argv(self, check: ArgvCheck | None = None) -> list[str]:
        """The job's arguments; with ``check`` (the job's own parser), only arguments it accepts.

        A cluster run's weights are a keyword or a URI with a scheme: a bare path would resolve against
        ``fs.defaultFS`` (HDFS on EMR) and fail on the cluster, minutes later, with a connection error.
        """
        weights = self.weights if self.weights is not None else extra_value(self.extra, "--weights")
        if weights is not None and weights not in WEIGHT_KEYWORDS and "://" not in weights:
            raise RunSpecError(
                f"--weights {weights}: a path without a scheme resolves against the cluster's fs.defaultFS "
                f"(HDFS on EMR); use {node_local_uri(weights) if weights.startswith('/') else 'file:///...'} "
                "for a file on every node, or an s3:// URI"
            )
        args = ["--input", self.input, "--output", self.output]
        for name in RENDERED:
            value = getattr(self, name)
            if value is not None:
                args += [f"--{name.replace('_', '-')}", str(value)]
        args += list(self.extra)
        complaint = check(args) if check is not None else None
        if complaint:
            raise RunSpecError(f"job arguments: {complaint}")
        return args


def extra_value(extra: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` among pass-through arguments (``--flag v`` or ``--flag=v``), if present."""
    for i, arg in enumerate(extra):
        if arg == flag and i + 1 < len(extra):
            return extra[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None
