"""Package-scoped fixtures of the emulated EMR deployment (see tests/emr/cluster.py for what is emulated how).

Built once for tests/emr (both modules share one deployment, node and cluster: each test writes its own
results/driver folders, and a test that stops a worker restarts it), and torn down after its last test, in
the order a real deployment happens:

1. ``project``: moto_server; the exported .onnx model and the raw images in the project bucket; the real
   ``featurizer deploy`` (job package, bootstrap files, onnx wheelhouse); the cluster created in moto's EMR
   from ``emr_spec.run_job_flow_request`` (the same request ``cluster up`` sends); a CloudFormation stack
   carrying the cluster stack's outputs (ClusterId, ProjectBucketName, ArtifactsPrefix, DefaultWeights,
   DefaultEngine).
2. ``node``: the bootstrap action as EMR runs it: the script and arguments read back from the cluster
   (list_bootstrap_actions), ``install.sh`` downloaded from S3 and run with bash, with the AWS CLI pointed at
   moto and every package index unreachable.
3. ``emulation``: SPARK_CONF_DIR/HADOOP_CONF_DIR from the Configurations the cluster was created with
   (describe_cluster), a standalone master and two single-core workers; stopped at the end.

Skips: only when a platform tool is missing (Java, python3.11); FEATURIZER_NO_SKIPS=1 turns them into failures.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from blueprint import emr_spec
from blueprint.run_spec import RunDefaults
from blueprint.settings import Settings, load_settings
from tests.conftest import FRUITS
from tests.emr import cluster as emu

BUCKET = "featurizer-emr-emulation"
STACK = "featurizer-cluster"
WEIGHTS_KEY = "artifacts/weights/m.onnx"
# 50 real images: 5 from each of the 10 vendored classes.
PER_CLASS = 5


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "emr: runs the job on the emulated EMR cluster (moto, bootstrap, standalone)")


@dataclass
class Project:
    """The deployed project in moto: where things are, and the settings the deployment used."""

    root: Path
    moto: emu.Moto
    settings: Settings
    onnx_sha256: str
    cluster_id: str
    deployed: dict[str, str]  # role -> s3:// URI of what `featurizer deploy` uploaded
    deploy_stdout: str
    timings: dict[str, float]

    @property
    def endpoint(self) -> str:
        return self.moto.url

    def env(self) -> dict[str, str]:
        return emu.aws_env(self.endpoint, self.root / "client-home")

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=emu.REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@dataclass
class Node:
    venv_python: Path
    weights_file: Path
    bootstrap_args: list[str]
    bootstrap_stderr: str


@dataclass
class StepRun:
    """One step run on the emulated cluster."""

    name: str
    step_args: list[str]  # as EMR stores them (describe_step)
    argv: list[str]  # what ran here
    returncode: int
    stdout: str
    stderr: str
    output: Path | None
    seconds: float
    metadata: dict = field(default_factory=dict)
    event_logs: list[str] = field(default_factory=list)  # the event log files this run added


@pytest.fixture(scope="package")
def emr_timings() -> Iterator[dict[str, float]]:
    timings: dict[str, float] = {}
    yield timings
    print("\nEMR emulation timings (s): " + json.dumps(timings), file=sys.stderr)


def _require_platform() -> None:
    for tool in ("java", "python3.11", "bash"):
        if shutil.which(tool) is None:
            pytest.skip(f"platform tool {tool!r} is not installed")
    for path in (emu.AWS_CLI, emu.MOTO_SERVER, emu.FEATURIZER, emu.SPARK_SUBMIT, emu.SPARK_DAEMON):
        assert path.exists(), f"{path} is missing: run ./scripts/setup.sh (dev extra)"


def _sample_images(root: Path) -> Path:
    folder = root / "images"
    for label in sorted(p for p in FRUITS.iterdir() if p.is_dir()):
        (folder / label.name).mkdir(parents=True)
        for image in sorted(label.glob("*.jpg"))[:PER_CLASS]:
            (folder / label.name / image.name).symlink_to(image.resolve())
    return folder


def _deployed_uris(stdout: str) -> dict[str, str]:
    """The artifacts `featurizer deploy` reports (lines `uploaded|unchanged s3://... (size)`)."""
    uris = [line.split()[1] for line in stdout.splitlines() if line.startswith(("uploaded", "unchanged"))]

    def one(suffix: str) -> str:
        [uri] = [u for u in uris if u.endswith(suffix)]
        return uri

    manifest = one("/manifest.json")
    return {
        "zip": one("/job.zip"),
        "entry": one("/entrypoint.py"),
        "script": one("/install.sh"),
        "requirements": one("/requirements-onnx.txt"),
        "wheelhouse": manifest.rsplit("/", 1)[0],
    }


@pytest.fixture(scope="package")
def project(
    tmp_path_factory: pytest.TempPathFactory, onnx_model_file: Path, emr_timings: dict[str, float]
) -> Iterator[Project]:
    _require_platform()
    root = tmp_path_factory.mktemp("emr")
    moto = emu.Moto(root / "moto.log")
    with emu.timed(emr_timings, "moto_start"):
        moto.start()
    try:
        env = emu.aws_env(moto.url, root / "client-home")
        with emu.timed(emr_timings, "onnx_export"):
            model = root / "m.onnx"  # the test weights, exported once per run (tests/conftest.py)
            shutil.copyfile(onnx_model_file, model)
        sha = hashlib.sha256(model.read_bytes()).hexdigest()
        settings = load_settings(
            {
                "bootstrap_profile": "onnx",
                "weights_s3_uri": f"s3://{BUCKET}/{WEIGHTS_KEY}",
                "weights_sha256": sha,
                "venv_path": str(root / "opt" / "featurizer" / "venv"),
                "weights_dir": str(root / "opt" / "featurizer" / "weights"),
            }
        )
        assert settings.offline_bootstrap, "cdk.json's default is the offline (wheelhouse) bootstrap"
        emu.aws_cli(env, "s3", "mb", f"s3://{BUCKET}")
        emu.aws_cli(env, "s3", "cp", "--only-show-errors", str(model), f"s3://{BUCKET}/{WEIGHTS_KEY}")
        emu.aws_cli(env, "s3", "sync", "--only-show-errors", str(_sample_images(root)), f"s3://{BUCKET}/raw/fruits/")

        with emu.timed(emr_timings, "deploy"):
            argv = [str(emu.FEATURIZER), "--endpoint-url", moto.url, "deploy", "--bucket", BUCKET]
            argv += ["--bootstrap-profile", settings.bootstrap_profile, "--out", str(root / "dist")]
            deploy = emu.run(
                argv,
                env=emu.aws_env(moto.url, root / "client-home", keep_home=True),
                cwd=root,
                timeout=900,
            )
        assert deploy.returncode == 0, deploy.stderr[-3000:]
        deployed = _deployed_uris(deploy.stdout)

        session = boto3.Session(region_name=emu.REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        emr = session.client("emr", endpoint_url=moto.url)
        security = "featurizer-emulation"
        emr.create_security_configuration(
            Name=security,
            SecurityConfiguration=json.dumps(
                emr_spec.security_configuration(settings, "arn:aws:kms:us-east-1:123456789012:key/emulated")
            ),
        )
        resources = emr_spec.ClusterResources(
            service_role="EMR_DefaultRole",
            instance_profile="EMR_EC2_DefaultRole",
            security_configuration=security,
            log_uri=f"s3://{BUCKET}/logs/",
            subnet_ids=(),
        )
        request = emr_spec.run_job_flow_request(
            settings,
            resources=resources,
            bootstrap_script_uri=deployed["script"],
            requirements_uri=deployed["requirements"],
            wheelhouse_uri=deployed["wheelhouse"],
            keep_alive=True,
        )
        cluster_id = emr.run_job_flow(**request)["JobFlowId"]
        outputs = {
            "ClusterId": cluster_id,
            "ProjectBucketName": BUCKET,
            "ArtifactsPrefix": f"s3://{BUCKET}/artifacts/",
            "LogUri": f"s3://{BUCKET}/logs/",
            **RunDefaults.from_settings(settings, bucket=BUCKET).outputs(),
        }
        template = {
            "Resources": {"Marker": {"Type": "AWS::S3::Bucket"}},
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
        session.client("cloudformation", endpoint_url=moto.url).create_stack(
            StackName=STACK, TemplateBody=json.dumps(template)
        )
        yield Project(root, moto, settings, sha, cluster_id, deployed, deploy.stdout, emr_timings)
    finally:
        moto.stop()
        shutil.rmtree(root / "dist", ignore_errors=True)  # the 180 MB wheelhouse copy


@pytest.fixture(scope="package")
def node(project: Project, emr_timings: dict[str, float]) -> Iterator[Node]:
    """The bootstrap action, as EMR runs it on every node, before Spark is installed."""
    emr = project.client("emr")
    [action] = emr.list_bootstrap_actions(ClusterId=project.cluster_id)["BootstrapActions"]
    env = emu.node_env(project.root, project.endpoint)
    script = project.root / "bootstrap" / "install.sh"
    script.parent.mkdir()
    emu.aws_cli(env, "s3", "cp", "--only-show-errors", action["ScriptPath"], str(script))
    with emu.timed(emr_timings, "bootstrap"):
        done = emu.run(["bash", str(script), *action["Args"]], env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    settings = project.settings
    try:
        yield Node(
            venv_python=Path(settings.venv_python),
            weights_file=Path(str(settings.weights_local_path)),
            bootstrap_args=list(action["Args"]),
            bootstrap_stderr=done.stderr,
        )
    finally:
        shutil.rmtree(settings.venv_path, ignore_errors=True)


@dataclass
class Emulation:
    project: Project
    node: Node
    cluster: emu.StandaloneCluster
    configurations: list[dict]
    mirror: Path
    artifacts: dict[str, Path]
    timings: dict[str, float]

    def download_artifacts(self, step_args: list[str]) -> None:
        """The step's job zip and entry point, copied from moto (the S3 the step names) into the mirror.

        ``submit`` uploads a new package when the job's sources changed since ``deploy``: whatever the step
        names is what runs.
        """
        py_files = step_args.index("--py-files")
        for arg in step_args[py_files + 1 : py_files + 3]:  # the zip, then the primary resource (entry point)
            if arg.startswith("s3://") and arg not in self.artifacts:
                local = self.mirror / arg.removeprefix("s3://")
                local.parent.mkdir(parents=True, exist_ok=True)
                emu.aws_cli(self.project.env(), "s3", "cp", "--only-show-errors", arg, str(local))
                self.artifacts[arg] = local

    def run_step(self, name: str, step_args: list[str], *, timeout: float = 600) -> StepRun:
        """Run a step's argv (as EMR stores it) on the emulated cluster, as the step's driver would."""
        self.download_artifacts(step_args)
        argv = emu.local_argv(step_args, artifacts=self.artifacts, mirror=self.mirror)
        out_uri = argv[argv.index("--output") + 1]
        output = emu.file_uri_path(out_uri)
        home = self.project.root / "driver" / name
        home.mkdir(parents=True)
        env = {**emu.spark_env_base(self.cluster.confs), "HOME": str(home)}
        events = self.cluster.confs.event_log
        before = {p.name for p in events.iterdir()}
        started = time.monotonic()
        done = emu.run(argv, env=env, cwd=home, timeout=timeout)
        seconds = round(time.monotonic() - started, 1)
        (home / "stdout").write_text(done.stdout)
        (home / "stderr").write_text(done.stderr)
        self.timings[f"step_{name}"] = seconds
        metadata = {}
        if (output / "metadata.json").is_file():
            metadata = json.loads((output / "metadata.json").read_text())
        added = sorted({p.name for p in events.iterdir()} - before)
        return StepRun(
            name, step_args, argv, done.returncode, done.stdout, done.stderr, output, seconds, metadata, added
        )


@pytest.fixture(scope="package")
def emulation(project: Project, node: Node, emr_timings: dict[str, float]) -> Iterator[Emulation]:
    cluster_desc = project.client("emr").describe_cluster(ClusterId=project.cluster_id)["Cluster"]
    configurations = cluster_desc["Configurations"]
    root = project.root / "cluster"
    master_port, webui_port = emu.free_port(), emu.free_port()
    confs = emu.write_confs(configurations, root, master_url=f"spark://127.0.0.1:{master_port}")
    standalone = emu.StandaloneCluster(root, confs, master_port, webui_port)
    try:
        with emu.timed(emr_timings, "cluster_start"):
            standalone.start()
        # S3 -> local: the raw images now, each step's job artifacts when it runs (download_artifacts).
        mirror = project.root / "s3"
        env = project.env()
        emu.aws_cli(env, "s3", "sync", "--only-show-errors", f"s3://{BUCKET}/raw/", str(mirror / BUCKET / "raw"))
        yield Emulation(project, node, standalone, configurations, mirror, {}, emr_timings)
    finally:
        standalone.stop()
