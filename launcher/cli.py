"""`featurizer`: thin click commands over package/deploy/submit/wait; exit codes decided here only.

Results go to stdout (parseable), progress and notes to stderr. Every error is one line on
stderr: typed launcher errors map to exit codes in `FeaturizerGroup`, nothing else does.
Exit codes: 0 ok, 1 run failed or AWS kept failing, 2 usage or configuration error, 3 timed out.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from blueprint import artifacts
from blueprint.errors import SpecError
from job.config import OPTIONS as JOB_OPTIONS  # the job's option table: argparse only, no Spark or TensorFlow
from launcher import errors
from launcher.terminal import StatusLine, size_text, upload_progress

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
_EXIT_CODES: tuple[tuple[type[errors.LauncherError], int], ...] = (
    (errors.WaitTimeout, EXIT_TIMEOUT),
    (errors.ConfigError, EXIT_USAGE),
    (errors.LauncherError, EXIT_FAILED),
)


class Failure(click.ClickException):
    """A launcher error on its way out: one line on stderr, the mapped exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"featurizer: error: {self.format_message()}", err=True)


class FeaturizerGroup(click.Group):
    """The root group: the one place where errors become exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except errors.LauncherError as err:
            code = next(code for kind, code in _EXIT_CODES if isinstance(err, kind))
            raise Failure(str(err), code) from None
        except SpecError as err:  # settings, run options, packaging: all fixable by the user
            raise Failure(str(err), EXIT_USAGE) from None
        except KeyboardInterrupt:
            raise Failure("interrupted", 130) from None
        except Exception as err:  # the "never a traceback" promise, with a way to get one
            if os.environ.get("FEATURIZER_DEBUG"):
                raise
            raise Failure(
                f"internal error: {type(err).__name__}: {err} (FEATURIZER_DEBUG=1 shows the traceback)",
                EXIT_FAILED,
            ) from None


@dataclass
class State:
    """Options of the root group, shared by every command; `clock` is injectable for tests."""

    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    max_attempts: int = 5
    clock: Any = None
    _aws: Any = field(default=None, repr=False)

    def aws(self) -> Any:
        """The session, built on first use so `package`, `run` and `--help` need no AWS at all."""
        if self._aws is None:
            from launcher.aws import Aws

            self._aws = Aws.connect(
                profile=self.profile,
                region=self.region,
                endpoint_url=self.endpoint_url,
                max_attempts=self.max_attempts,
            )
        return self._aws


pass_state = click.make_pass_decorator(State, ensure=True)


@click.group("featurizer", cls=FeaturizerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--profile", help="AWS profile (default: the environment's).")
@click.option("--region", help="AWS region (default: AWS_REGION / the profile's).")
@click.option("--endpoint-url", help="Send AWS calls here (e.g. a local moto_server); AWS_ENDPOINT_URL works too.")
@click.option("--max-attempts", type=click.IntRange(1, 20), default=5, show_default=True, help="Attempts per AWS call.")
@click.version_option(package_name="emr-image-featurizer")
@click.pass_context
def main(
    ctx: click.Context, profile: str | None, region: str | None, endpoint_url: str | None, max_attempts: int
) -> None:
    """Featurize images with MobileNetV2 on Spark: locally (run, demo) or on Amazon EMR."""
    state = ctx.ensure_object(State)
    state.profile, state.region, state.endpoint_url, state.max_attempts = profile, region, endpoint_url, max_attempts


# --- local ------------------------------------------------------------------------------------


def _exit_with(ctx: click.Context, code: int) -> None:
    sys.stdout.flush()  # the job prints with print(); flush before click takes over the exit
    sys.stderr.flush()
    ctx.exit(code)


def _local_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The job's options as click options, generated from `job.config.OPTIONS` (the job's argparse for
    spark-submit is generated from the same table), each with its help and default."""
    for opt in reversed(JOB_OPTIONS):
        if opt.is_flag:
            decorator = click.option(opt.flag, is_flag=True, default=False, help=opt.help)
        else:
            kind: Any = click.Choice(opt.choices) if opt.choices else opt.type
            decorator = click.option(
                opt.flag, type=kind, default=opt.default, required=opt.required, show_default=True, help=opt.help
            )
        func = decorator(func)
    return func


def _given_argv(ctx: click.Context, params: dict[str, Any]) -> list[str]:
    """The options the user gave, as the job's argv: the job's own parser checks combinations and ranges."""
    argv: list[str] = []
    for opt in JOB_OPTIONS:
        if ctx.get_parameter_source(opt.name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = params[opt.name]
        if opt.is_flag:
            argv += [opt.flag] if value else []
        else:
            argv += [opt.flag, str(value)]
    return argv


@main.command()
@_local_options
@click.pass_context
def run(ctx: click.Context, **params: Any) -> None:
    """Run the job here, on local Spark (or any --master): the same options as on EMR."""
    from job.__main__ import main as job_main  # lazily: pyspark/TensorFlow only when needed

    _exit_with(ctx, job_main(_given_argv(ctx, params)))


@main.command(short_help="Featurize synthetic images offline: the embedded default run.")
@click.option(
    "--output",
    "--out",
    "output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Folder for the generated images (images/) and the results (results/).",
)
@click.option("--per-class", type=click.IntRange(1, 1000), default=12, show_default=True,
              help="Synthetic images per class (9 classes).")  # fmt: skip
@click.option("--weights", default="random", show_default=True,
              help="random (offline), imagenet, or a weights file (.h5 / .onnx with --engine onnx).")  # fmt: skip
@click.option("--master", default="local[*]", show_default=True, help="Spark master.")
@click.pass_context
def demo(ctx: click.Context, output: Path, per_class: int, weights: str, master: str) -> None:
    """Write synthetic labelled images (coloured shapes in 9 class folders) and featurize them with local
    Spark and seeded random weights: no download, no sample data, no AWS."""
    from job.demo import run_demo

    _exit_with(ctx, run_demo(output, per_class=per_class, weights=weights, master=master))


@main.command()
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"), show_default=True
)
def package(out_dir: Path) -> None:
    """Build the job zip and entry point; the same sources give the same bytes and digest."""
    from blueprint.package import build_package

    built = build_package(out_dir)
    click.echo(f"digest {built.digest}")
    click.echo(f"zip    {built.zip_path}")
    click.echo(f"entry  {built.entry_path}")


@main.command(short_help="Expected cluster time, nodes and cost of a run, before you start it.")
@click.option("--images", type=click.IntRange(min=1), required=True, help="Images to featurize.")
@click.option(
    "--engine",
    type=click.Choice(["tf", "onnx", "onnx-int8"]),
    default=None,
    help="Engine (default: the settings' bootstrap profile).",
)
@click.option("--stack", help="Size the cluster a deployed stack declares (reads its template; needs AWS).")
@click.option("--core-type", help="Core node instance type (default: the settings' or the stack's).")
@click.option("--core-count", type=click.IntRange(min=1), help="Core nodes.")
@click.option("--task-type", "task_types", multiple=True, help="Task fleet instance type (repeatable).")
@click.option("--task-count", type=click.IntRange(min=0), help="Task nodes (default: the initial capacity).")
@click.option(
    "--scaled", is_flag=True, help="Task nodes at managed scaling's maximum (scaling_max_units less the core nodes)."
)
@click.option("--on-demand-tasks", is_flag=True, help="Price task nodes on demand instead of spot.")
@click.option(
    "--startup-minutes",
    type=click.FloatRange(min=0),
    default=12.0,
    show_default=True,
    help="Provisioning + bootstrap before the job starts (an assumption; 0 for a running cluster).",
)
@click.option(
    "--spot-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    help="Spot price as a fraction of on-demand (default: blueprint/prices.json's assumption).",
)
@click.option("--verbose", "-v", is_flag=True, help="Show the arithmetic and where every figure comes from.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
@pass_state
def estimate(
    state: State,
    images: int,
    engine: str | None,
    stack: str | None,
    core_type: str | None,
    core_count: int | None,
    task_types: tuple[str, ...],
    task_count: int | None,
    scaled: bool,
    on_demand_tasks: bool,
    startup_minutes: float,
    spot_fraction: float | None,
    verbose: bool,
    as_json: bool,
) -> None:
    """Estimate (not a quote) the cluster time, node count and on-demand/spot cost of featurizing
    --images images, from the bench's measured per-vCPU throughput and recorded list prices."""
    import dataclasses

    from blueprint import estimate as est
    from blueprint.settings import load_settings

    settings = load_settings()
    if stack:
        from launcher.stack import template

        shape = est.ClusterShape.from_template(template(state.aws(), stack), stack)
    else:
        shape = est.ClusterShape.from_settings(settings)
    shape = est.override(
        shape,
        core_type=core_type,
        core_count=core_count,
        task_types=task_types,
        task_count=task_count,
        scaled=scaled,
        spot=False if on_demand_tasks else None,
    )
    result = est.estimate(
        images,
        engine or settings.bootstrap_profile,
        shape,
        est.ThroughputTable.load(),
        est.PriceTable.load(),
        startup_minutes=startup_minutes,
        spot_fraction=spot_fraction,
    )
    if as_json:
        click.echo(
            json.dumps(
                dataclasses.asdict(result) | {"cluster_seconds": result.cluster_seconds, "source": shape.source},
                indent=2,
            )
        )
        return
    for line in est.report(result, shape, verbose=verbose):
        click.echo(line)


# --- AWS --------------------------------------------------------------------------------------


def _cluster_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--stack", help="CDK stack whose outputs give the cluster id and bucket.")(func)
    return click.option("--cluster-id", help="EMR cluster id (j-...).")(func)


def _resolve_cluster(state: State, cluster_id: str | None, stack: str | None) -> tuple[str, Any]:
    """(cluster id, stack outputs or None) from exactly one of --cluster-id / --stack."""
    if bool(cluster_id) == bool(stack):
        raise click.UsageError("give exactly one of --cluster-id or --stack")
    if stack:
        from launcher.stack import resolve

        outputs = resolve(state.aws(), stack)
        return outputs.cluster_id, outputs
    return str(cluster_id), None


def _bucket_and_prefix(bucket: str | None, prefix: str | None, outputs: Any) -> tuple[str, str]:
    from launcher.deploy import DEFAULT_PREFIX

    if outputs is not None:
        return bucket or outputs.bucket, prefix or outputs.artifacts_key_prefix(DEFAULT_PREFIX)
    if not bucket:
        raise click.UsageError("--bucket is required (or --stack, whose project bucket is used)")
    return bucket, prefix or DEFAULT_PREFIX


@main.command()
@click.option("--bucket", help="Project bucket (default with --stack: the stack's).")
@click.option("--stack", help="CDK stack whose outputs give the bucket and artifacts prefix.")
@click.option("--prefix", help="Key prefix for artifacts (default: artifacts/).")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"), show_default=True
)
@click.option("--bootstrap/--no-bootstrap", default=True, show_default=True, help="Also ship bootstrap/ files.")
@click.option(
    "--wheelhouse/--no-wheelhouse",
    default=None,
    help="Also ship the nodes' wheels for an offline bootstrap. [default: cdk.json's offline_bootstrap, "
    "with --bootstrap]",
)
@click.option(
    "--context",
    "-c",
    "context",
    multiple=True,
    help="Override a cdk.json setting (key=value), as for cdk deploy: e.g. -c bootstrap_profile=onnx.",
)
@click.option("--bootstrap-profile", type=click.Choice(artifacts.PROFILES),
              help="Bootstrap profile of the wheelhouse. [default: cdk.json's bootstrap_profile]")  # fmt: skip
@pass_state
def deploy(
    state: State,
    bucket: str | None,
    stack: str | None,
    prefix: str | None,
    out_dir: Path,
    bootstrap: bool,
    wheelhouse: bool | None,
    context: tuple[str, ...],
    bootstrap_profile: str | None,
) -> None:
    """Upload the package (and bootstrap files) to content-addressed keys; unchanged files are skipped."""
    from blueprint.package import build_package
    from launcher import deploy as deploying
    from launcher.stack import resolve

    outputs = resolve(state.aws(), stack) if stack else None
    bucket, prefix = _bucket_and_prefix(bucket, prefix, outputs)
    built = build_package(out_dir)
    items = deploying.package_artifacts(built, prefix)
    if bootstrap:
        items += deploying.bootstrap_artifacts(prefix)
        from launcher import cluster as clusters

        settings = clusters.settings_from(dict(_key_value(item) for item in context))
        if settings.offline_bootstrap if wheelhouse is None else wheelhouse:
            items += deploying.wheelhouse_artifacts(bootstrap_profile or settings.bootstrap_profile, out_dir, prefix)
    for result in deploying.deploy(state.aws(), bucket, items, progress=upload_progress(sys.stderr)):
        click.echo(f"{'uploaded ' if result.uploaded else 'unchanged'} {result.uri} ({size_text(result.size)})")


# The run spec's options on a cluster, with where their default comes from when the user leaves them open.
_CLUSTER_DEFAULTS = {
    "weights": "the deployment's staged weights (stack output DefaultWeights), else imagenet",
    "engine": "onnx for the onnx bootstrap profile (DefaultEngine) or an .onnx model, else tf",
    "model_cache": "the project bucket's cache/models/ (DefaultModelCache), else none; none turns it off",
}
RUN_OPTIONS = ("weights", "engine", "variance", "k", "batch_size", "glob", "threads", "resize", "reuse", "model_cache")


def _job_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """A cluster run's options (a `blueprint.run_spec.RunSpec`), generated from `job.config.OPTIONS` like
    `featurizer run`'s; what is left open is filled from the deployment, then the job's parser checks all."""
    table = {opt.name: opt for opt in JOB_OPTIONS}
    opts = [
        click.option("--input", "input_uri", required=True, help="s3://bucket/prefix of images in class folders."),
        click.option("--output", "output_uri", required=True, help="s3://bucket/prefix for the results."),
    ]
    for name in RUN_OPTIONS:
        opt = table[name]
        default = _CLUSTER_DEFAULTS.get(name) or ("none" if opt.default is None else str(opt.default))
        kind: Any = click.Choice(opt.choices) if opt.choices else opt.type
        opts.append(click.option(opt.flag, type=kind, help=f"{opt.help} [default: {default}]"))
    opts.append(click.argument("job_args", nargs=-1, type=click.UNPROCESSED))
    for decorator in reversed(opts):
        func = decorator(func)
    return func


def _run_spec(params: dict[str, Any], defaults: Any) -> Any:
    """The run the user asked for, with the deployment's defaults filled in (`defaults`: a RunDefaults)."""
    from blueprint.run_spec import RunSpec

    run = RunSpec(
        input=params["input_uri"],
        output=params["output_uri"],
        **{name: params.get(name) for name in RUN_OPTIONS},
        extra=tuple(params.get("job_args", ())),
    )
    filled = run.with_defaults(defaults)
    for name in ("weights", "engine", "model_cache"):
        if getattr(filled, name) != getattr(run, name):
            click.echo(f"--{name.replace('_', '-')} {getattr(filled, name)} (default of {defaults.source})", err=True)
    return filled


def _wait_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--poll", default="15s", show_default=True, help="Time between polls.")(func)
    func = click.option("--tail", "tail_lines", type=click.IntRange(0), default=40, show_default=True,
                        help="Lines of stderr to show when the step fails.")(func)  # fmt: skip
    return click.option("--timeout", help="Give up waiting after this long (90s, 30m, 2h); default: never.")(func)


@main.command()
@_cluster_options
@click.option("--bucket", help="Bucket for the package (default with --stack: the stack's).")
@click.option("--prefix", help="Key prefix for artifacts (default: artifacts/).")
@_job_options
@click.option("--step-file", type=click.Path(dir_okay=False, path_type=Path), help="Also write the step JSON here.")
@click.option("--wait", "wait_", is_flag=True, help="Follow the step until it ends.")
@_wait_options
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"), show_default=True
)
@pass_state
def submit(state: State, **params: Any) -> None:
    """Add the job as one EMR step (deploying the package first if S3 lacks it); print its id and JSON.

    stdout: the step id on the first line, then the step as JSON for `aws emr add-steps --steps file://...`.
    Extra job arguments may follow `--`.

    Defaults of a cluster run: with --stack, the stack's DefaultWeights/DefaultEngine outputs (the weights
    the bootstrap staged, the engine of its profile); with --cluster-id, the job's own (imagenet, tf).
    """
    from blueprint import emr_spec
    from blueprint.package import build_package
    from blueprint.run_spec import RunDefaults
    from launcher import deploy as deploying
    from launcher import submit as submitting

    timeout, poll = _durations(params["timeout"], params["poll"])
    submitting.parse_s3_uri(params["input_uri"], option="--input")
    submitting.parse_s3_uri(params["output_uri"], option="--output")
    cluster_id, outputs = _resolve_cluster(state, params["cluster_id"], params["stack"])
    bucket, prefix = _bucket_and_prefix(params["bucket"], params["prefix"], outputs)
    run = _run_spec(params, outputs.run_defaults if outputs is not None else RunDefaults())
    submitting.step_args(run)  # the job's own checks first: they name the real problem
    if outputs is not None:
        submitting.check_role_scope(run, outputs.bucket)
        if outputs.subnet_ids:
            from launcher import preflight

            preflight.check_vpc_tagged(state.aws(), outputs.subnet_ids)
    built = build_package(params["out_dir"])
    result = submitting.submit(
        state.aws(),
        cluster_id=cluster_id,
        bucket=bucket,
        package_items=deploying.package_artifacts(built, prefix),
        digest=built.digest,
        run=run,
        progress=upload_progress(sys.stderr),
    )
    for item in result.deployed:
        click.echo(f"uploaded {item.uri}", err=True)
    document = json.dumps([emr_spec.cli_step(result.step)], indent=2)
    click.echo(result.step_id)
    click.echo(document)
    if params["step_file"]:
        params["step_file"].write_text(document + "\n", encoding="utf-8")
    click.echo(f"added step {result.step_id} to cluster {cluster_id}", err=True)
    if params["step_file"]:
        click.echo(f"same step by hand: aws emr add-steps --cluster-id {cluster_id} "
                   f"--steps file://{params['step_file']}", err=True)  # fmt: skip
    if params["wait_"]:
        _follow(state, cluster_id, result.step_id, timeout, poll, params["tail_lines"])


@main.command("wait")
@click.argument("step_id")
@_cluster_options
@_wait_options
@click.option("--cancel", is_flag=True,
              help="When --timeout hits, cancel the step (EMR has no step timeout); still exits 3.")  # fmt: skip
@click.option("--log-wait", default="6m", show_default=True,
              help="After a failure, wait up to this long for EMR to copy the step and driver logs to S3 "
                   "(it does so every ~5 minutes); 0: look once.")  # fmt: skip
@pass_state
def wait_cmd(
    state: State,
    step_id: str,
    cluster_id: str | None,
    stack: str | None,
    timeout: str | None,
    poll: str,
    tail_lines: int,
    cancel: bool,
    log_wait: str,
) -> None:
    """Follow a step until it ends: 0 completed, 1 failed/cancelled, 3 timed out (no 30-minute cap).

    On failure: the reason, then the tails of the step's stderr and of the driver's stderr (in cluster
    deploy mode the traceback is in the driver container's log), waiting up to --log-wait for EMR to copy them.
    """
    seconds, poll_seconds = _durations(timeout, poll)
    if cancel and seconds is None:
        raise click.BadParameter("--cancel needs --timeout", param_hint="--cancel")
    log_seconds = _log_wait_seconds(log_wait)
    cluster, _ = _resolve_cluster(state, cluster_id, stack)
    _follow(state, cluster, step_id, seconds, poll_seconds, tail_lines, log_wait=log_seconds, cancel=cancel)


@main.command()
@click.argument("step_id")
@_cluster_options
@click.option(
    "--stream",
    type=click.Choice(
        ["all", "stderr", "stdout", "controller", "syslog", "driver-stderr", "driver-stdout", "failure-log"]
    ),
    default="all",
    show_default=True,
    help="all: every log that exists. driver-*: the driver's container (cluster deploy mode). "
    "failure-log: the file describe_step names in FailureDetails.LogFile.",
)
@click.option("--tail", "tail_lines", type=click.IntRange(0), default=0, help="Only the last N lines (0: all).")
@click.option("--log-wait", default="6m", show_default=True,
              help="For a step that just ended, wait up to this long for EMR to copy its logs to S3 "
                   "(it does so every ~5 minutes); 0: look once.")  # fmt: skip
@pass_state
def logs(
    state: State, step_id: str, cluster_id: str | None, stack: str | None, stream: str, tail_lines: int, log_wait: str
) -> None:
    """Print the step's logs that EMR copied to the cluster's LogUri: its controller, syslog, stdout and
    stderr, describe_step's FailureDetails.LogFile, and the driver container's stdout and stderr."""
    from launcher import wait as waiting

    wait_seconds = _log_wait_seconds(log_wait)
    cluster, _ = _resolve_cluster(state, cluster_id, stack)
    aws = state.aws()
    location = waiting.log_location(aws, cluster, step_id)
    status = waiting.step_status(aws, cluster, step_id)
    ended = status.state == waiting.COMPLETED or status.state in waiting.FAILURES
    names = waiting.LOG_ORDER if stream == "all" else (stream,)
    found = waiting.collect_step_logs(
        aws,
        location,
        names,
        required=("stderr", "driver-stderr") if stream == "all" else (stream,),
        log_file=status.log_file,
        started=status.started,
        ended=status.ended,
        wait=wait_seconds if ended else 0.0,
        clock=state.clock,
        on_progress=lambda message: click.echo(message, err=True),
    )
    shown = found.ordered()
    for note in found.notes:
        click.echo(f"({note})", err=True)
    if not shown:
        if stream == "failure-log" and not status.log_file:
            raise errors.LogsNotAvailable(f"describe_step names no FailureDetails.LogFile for step {step_id}")
        missing = found.missing.get("stderr" if stream == "all" else stream) or location.uri("stderr")
        raise errors.LogsNotAvailable(f"{missing} is not there yet {waiting.NOT_YET}; try again later")
    for log in shown:
        if stream == "all":
            click.echo(f"==> {log.uri} <==")
        click.echo(waiting.tail(log.text, tail_lines) if tail_lines else log.text.rstrip("\n"))
    if stream == "all":
        for uri in found.missing.values():
            click.echo(f"(not there yet: {uri})", err=True)


@main.group()
def cluster() -> None:
    """Clusters without CDK."""


@cluster.command("up")
@click.option(
    "--transient",
    is_flag=True,
    help="The cluster terminates when its step ends. Every cluster `cluster up` starts is transient "
    "(long-lived ones come from `cdk deploy`); the flag only says so.",
)
@click.option(
    "--stack",
    help="CDK cluster stack whose bucket, log location, roles (with the data-key grants), security "
    "configuration and subnets the transient cluster uses: the same cluster as the stack's, run once.",
)
@click.option("--bucket", help="Bucket for artifacts (and logs, unless --log-uri). [default with --stack: the stack's]")
@click.option("--prefix", help="Key prefix for artifacts (default: artifacts/).")
@click.option("--log-uri", help="Where EMR writes logs. [default: the stack's LogUri, else s3://BUCKET/logs/]")
@click.option("--service-role", help="EMR service role. [default: the stack's, else EMR_DefaultRole]")
@click.option("--instance-profile", help="EC2 instance profile. [default: the stack's, else EMR_EC2_DefaultRole]")
@click.option("--security-configuration", help="EMR security configuration. [default: the stack's, else none]")
@click.option(
    "--subnet", "subnets", multiple=True, help="Subnet id (repeatable). [default: the stack's, else cdk.json's]"
)
@click.option("--context", "-c", "context", multiple=True, help="Override a cdk.json setting: key=value.")
@click.option("--name", help="Cluster name.")
@_job_options
@click.option("--wait", "wait_", is_flag=True, help="Follow the step until it ends.")
@_wait_options
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"), show_default=True
)
@pass_state
def cluster_up(state: State, **params: Any) -> None:
    """Start a cluster that runs the job once and terminates; print the cluster id (then the step id).

    Defaults of the run: the weights the bootstrap stages and the engine of its profile, from cdk.json and
    --context (the same values the stack's console step uses).
    """
    from blueprint.run_spec import RunDefaults
    from launcher import cluster as clusters
    from launcher import submit as submitting
    from launcher.stack import resolve

    timeout, poll = _durations(params["timeout"], params["poll"])
    overrides = dict(_key_value(item) for item in params["context"])
    settings = clusters.settings_from(overrides)
    submitting.parse_s3_uri(params["input_uri"], option="--input")
    submitting.parse_s3_uri(params["output_uri"], option="--output")
    outputs = resolve(state.aws(), params["stack"]) if params["stack"] else None
    bucket, prefix = _bucket_and_prefix(params["bucket"], params["prefix"], outputs)
    given = clusters.Placement(
        log_uri=params["log_uri"],
        service_role=params["service_role"],
        instance_profile=params["instance_profile"],
        security_configuration=params["security_configuration"],
        subnets=tuple(params["subnets"]),
        name=params["name"],
    )
    target = clusters.target_for(bucket, prefix, given, settings, outputs)
    source = "cdk.json" + (" and --context" if params["context"] else "")
    # The model cache the nodes may write is the stack's bucket's, whatever bucket the package goes to.
    cache_bucket = outputs.bucket if outputs is not None else bucket
    run = _run_spec(params, RunDefaults.from_settings(settings, bucket=cache_bucket, source=source))
    submitting.step_args(run)  # the job's own checks first: they name the real problem
    if outputs is not None:
        submitting.check_role_scope(run, outputs.bucket)
    started = clusters.up(
        state.aws(), settings, run, target, out_dir=params["out_dir"], progress=upload_progress(sys.stderr)
    )
    for uri in started.uploaded:
        click.echo(f"uploaded {uri}", err=True)
    click.echo(started.cluster_id)
    click.echo(started.step_id)
    click.echo(
        f"started transient cluster {started.cluster_id} (step {started.step_id}); it terminates after the step",
        err=True,
    )
    if params["wait_"] and started.step_id:
        _follow(state, started.cluster_id, started.step_id, timeout, poll, params["tail_lines"])


# --- helpers ----------------------------------------------------------------------------------


def _durations(timeout: str | None, poll: str) -> tuple[float | None, float]:
    from launcher.wait import parse_duration

    try:
        limit, every = (parse_duration(timeout) if timeout else None), parse_duration(poll)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--timeout/--poll") from None
    if every < 1:
        raise click.BadParameter("poll at most once a second", param_hint="--poll")
    return limit, every


def _key_value(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--context")
    return key.strip(), value.strip()


def _follow(
    state: State,
    cluster_id: str,
    step_id: str,
    timeout: float | None,
    poll: float,
    tail_lines: int,
    *,
    log_wait: float | None = None,
    cancel: bool = False,
) -> None:
    """Wait, then report: COMPLETED exits 0; otherwise the reason and the step's and driver's stderr tails, exit 1.

    `log_wait`: how long to wait for EMR to copy the logs (None: wait.DEFAULT_LOG_WAIT_SECONDS);
    `cancel`: cancel the step when `timeout` hits.
    """
    from launcher import wait as waiting

    aws = state.aws()
    line = StatusLine(sys.stderr, step_id)
    try:
        outcome = waiting.wait_for_step(
            aws,
            cluster_id,
            step_id,
            timeout=timeout,
            poll=poll,
            clock=state.clock,
            on_poll=line.update,
            on_error=lambda err: line.note(f"poll failed, will retry: {err}"),
            cancel=cancel,
        )
    finally:
        line.close()
    took = waiting.format_duration(outcome.elapsed)
    if outcome.ok:
        click.echo(f"step {step_id} COMPLETED after {took}", err=True)
        return
    click.echo(f"step {step_id} {outcome.state} after {took}: {outcome.reason or 'no reason given'}", err=True)
    wait_logs = waiting.DEFAULT_LOG_WAIT_SECONDS if log_wait is None else log_wait
    _show_failure_logs(aws, outcome, tail_lines, wait_logs, state.clock)
    raise click.exceptions.Exit(EXIT_FAILED)


def _show_failure_logs(aws: Any, outcome: Any, lines: int, log_wait: float, clock: Any) -> None:
    """The step's stderr, FailureDetails.LogFile and the driver's stderr and stdout, once in S3."""
    from launcher import wait as waiting

    if lines <= 0:
        return
    try:
        location = waiting.log_location(aws, outcome.cluster_id, outcome.step_id)
        found = waiting.collect_step_logs(
            aws,
            location,
            ("stderr", waiting.FAILURE_LOG, "driver-stderr", "driver-stdout"),
            required=("stderr", "driver-stderr"),
            log_file=outcome.log_file,
            started=outcome.started,
            ended=outcome.ended,
            wait=log_wait,
            clock=clock,
            on_progress=lambda message: click.echo(message, err=True),
        )
    except errors.LauncherError as err:  # the step failed: that stays the outcome, whatever the logs do
        click.echo(f"(no step log: {err})", err=True)
        return
    for text in waiting.failure_report(found, lines):
        click.echo(text, err=True)


def _log_wait_seconds(text: str) -> float:
    from launcher.wait import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--log-wait") from None
