"""The run spec: one place that turns a run's options, with the deployment's defaults, into the job's argv."""

from __future__ import annotations

import pytest

from blueprint import run_spec
from blueprint.errors import RunSpecError
from blueprint.run_spec import RunDefaults, RunSpec, node_local_uri
from blueprint.settings import Settings
from job import config
from job.config import ENGINES, from_argv
from launcher.submit import job_parser_complaint as job_parser

SHA = "0" * 64
ONNX = Settings(bootstrap_profile="onnx", weights_s3_uri="s3://bkt/w/m.onnx", weights_sha256=SHA)
STAGED_H5 = Settings(weights_s3_uri="s3://bkt/w/m.h5", weights_sha256=SHA)
RUN = RunSpec(input="s3://b/raw/", output="s3://b/results/r1/")


def test_staged_weights_are_node_local_file_uris_not_default_fs_paths() -> None:
    # A scheme-less path resolves against fs.defaultFS (HDFS on EMR): the job would look in HDFS.
    assert RunDefaults.from_settings(STAGED_H5).weights == "file:///opt/featurizer/weights/m.h5"
    assert node_local_uri("/opt/x") == "file:///opt/x"
    assert node_local_uri("file:///opt/x") == "file:///opt/x"
    with pytest.raises(RunSpecError, match="absolute"):
        node_local_uri("relative/x")


def test_onnx_profile_defaults_give_the_onnx_engine_and_the_staged_model() -> None:
    argv = RUN.with_defaults(RunDefaults.from_settings(ONNX)).argv()
    assert argv == [
        "--input", "s3://b/raw/", "--output", "s3://b/results/r1/",
        "--weights", "file:///opt/featurizer/weights/m.onnx", "--engine", "onnx",
    ]  # fmt: skip
    assert from_argv(argv).engine == "onnx"


def test_the_user_wins_over_the_deployment_defaults_also_after_double_dash() -> None:
    defaults = RunDefaults.from_settings(ONNX)
    explicit = RunSpec(input="s3://b/raw/", output="s3://b/o/", weights="random", engine="tf")
    assert explicit.with_defaults(defaults) == explicit
    passthrough = RunSpec(input="s3://b/raw/", output="s3://b/o/", extra=("--engine", "tf", "--weights=random"))
    assert passthrough.with_defaults(defaults) == passthrough


def test_an_onnx_model_given_without_an_engine_selects_the_onnx_engine() -> None:
    run = RunSpec(input="s3://b/raw/", output="s3://b/o/", weights="s3://b/artifacts/m.onnx")
    assert run.with_defaults(RunDefaults()).engine == "onnx"
    assert run.with_defaults(RunDefaults(engine="tf")).engine == "tf"  # the deployment said so: the job refuses it
    with pytest.raises(RunSpecError, match="needs --engine onnx"):
        run.with_defaults(RunDefaults(engine="tf")).argv(check=job_parser)


def test_reuse_is_passed_to_the_job() -> None:
    run = RunSpec(input="s3://b/raw/", output="s3://b/o/", reuse="s3://b/o/")
    argv = run.with_defaults(RunDefaults()).argv()
    assert argv[-2:] == ["--reuse", "s3://b/o/"] and from_argv(argv).reuse == "s3://b/o/"
    with pytest.raises(RunSpecError, match="--reuse"):
        RunSpec(input="s3://b/raw/", output="s3://b/o/", reuse="s3://b/raw/").argv(check=job_parser)


def test_no_defaults_leave_the_job_defaults_and_stack_outputs_round_trip() -> None:
    assert RUN.with_defaults(RunDefaults()).argv() == ["--input", "s3://b/raw/", "--output", "s3://b/results/r1/"]
    published = RunDefaults.from_settings(ONNX).outputs()
    assert RunDefaults.from_outputs(published, stack="s") == RunDefaults(
        weights="file:///opt/featurizer/weights/m.onnx", engine="onnx", source="stack s"
    )
    assert RunDefaults.from_outputs(RunDefaults().outputs(), stack="s") == RunDefaults(source="stack s")


def test_a_bare_weights_path_is_refused_before_it_reaches_hdfs() -> None:
    with pytest.raises(RunSpecError, match=r"fs.defaultFS \(HDFS on EMR\); use file:///opt/w/m.onnx"):
        RunSpec(input="s3://b/raw/", output="s3://b/o/", weights="/opt/w/m.onnx", engine="onnx").argv()
    with pytest.raises(RunSpecError, match="without a scheme"):
        RunSpec(input="s3://b/raw/", output="s3://b/o/", extra=("--weights", "w.h5")).argv()
    for ok in ("imagenet", "random", "file:///opt/w/m.h5", "s3://b/artifacts/weights/m.h5"):
        assert ok in RunSpec(input="s3://b/raw/", output="s3://b/o/", weights=ok).argv()


def test_options_render_in_one_place_and_are_checked_by_the_job_parser() -> None:
    run = RunSpec(input="s3://b/raw/", output="s3://b/o/", batch_size=128, k=20, glob="*.png", threads=2)
    cfg = from_argv(run.argv(check=job_parser))
    assert (cfg.batch_size, cfg.k, cfg.glob, cfg.threads) == (128, 20, "*.png", 2)
    with pytest.raises(RunSpecError, match="job arguments: --variance"):
        RunSpec(input="s3://b/raw/", output="s3://b/o/", variance=1.5).argv(check=job_parser)
    assert RunSpec(input="s3://b/raw/", output="s3://b/o/", variance=1.5).argv()  # unchecked: rendered as asked
    with pytest.raises(RunSpecError, match="engine"):
        RunSpec(input="i", output="o", engine="torch")
    with pytest.raises(RunSpecError, match="--master"):
        RunSpec(input="i", output="o", extra=("--master", "local[*]"))
    with pytest.raises(RunSpecError, match="--output is given once"):
        RunSpec(input="i", output="o", extra=("--output=x",))


def test_the_cli_offers_exactly_the_job_engines() -> None:
    from launcher.cli import main

    engine = next(p for p in main.commands["submit"].params if p.name == "engine")
    assert tuple(engine.type.choices) == tuple(ENGINES)


def test_the_neutral_spec_names_the_same_engines_and_keywords_as_the_job_parser() -> None:
    """blueprint/ must not import job/ (the CDK synth would); its copies must not drift from the job's."""
    assert run_spec.ENGINES == config.ENGINES == ENGINES
    assert run_spec.WEIGHT_KEYWORDS == config.WEIGHT_KEYWORDS


def test_the_deployments_model_cache_is_filled_in_unless_the_run_names_one() -> None:
    defaults = RunDefaults.from_settings(ONNX, bucket="proj")
    assert defaults.model_cache == "s3://proj/cache/models/"
    assert RunDefaults.from_settings(ONNX).model_cache is None  # no bucket known: the job's default (none)
    argv = RUN.with_defaults(defaults).argv(check=job_parser)
    assert argv[-2:] == ["--model-cache", "s3://proj/cache/models/"]
    assert from_argv(argv).model_cache == "s3://proj/cache/models/"
    mine = RunSpec(input="s3://b/raw/", output="s3://b/o/", model_cache="s3://b/mine/")
    assert mine.with_defaults(defaults).model_cache == "s3://b/mine/"
    passthrough = RunSpec(input="s3://b/raw/", output="s3://b/o/", extra=("--model-cache=s3://b/x/",))
    assert passthrough.with_defaults(defaults).model_cache is None  # given after --: not filled twice
    assert RunDefaults.from_outputs(defaults.outputs(), stack="s").model_cache == "s3://proj/cache/models/"
