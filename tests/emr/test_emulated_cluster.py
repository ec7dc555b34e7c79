"""Proof on an emulated EMR: what the stack publishes and what `featurizer submit` adds run on a two-worker
Spark cluster configured from the cluster spec, nodes bootstrapped by the real install.sh (onnx profile, from
the wheelhouse, no package index), with EMR's spark-defaults/spark-env/defaultFS (tests/emr/cluster.py).

Each step is read back from moto's EMR (describe_step) and run with only these substitutions: S3 job artifacts ->
local copies downloaded from moto, --input/--output -> file:// URIs, --deploy-mode cluster -> client.
Checked: the run succeeds; the featurize tasks ran on the executors of both workers (metadata.json's spark
section, and independently Spark's event log and the workers' work folders), never in the driver; the
weights are the bootstrap's staged copy; no TensorFlow anywhere; the output meets the job's output contract.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from blueprint import emr_spec
from blueprint.errors import RunSpecError
from blueprint.run_spec import RunDefaults, RunSpec
from infra.cluster import console_run
from tests import contract
from tests.emr import cluster as emu
from tests.emr.conftest import BUCKET, PER_CLASS, STACK, Emulation, Node, Project, StepRun

pytestmark = [pytest.mark.slow, pytest.mark.emr]

OUTPUT_NAMES = {"_SUCCESS", "features", "rejected", "metadata.json", "explained_variance.png"}


# --- the node and the cluster's configuration ---------------------------------------------------------


def test_nodes_bootstrap_offline_from_the_clusters_own_bootstrap_action(project: Project, node: Node) -> None:
    settings, deployed = project.settings, project.deployed
    assert node.bootstrap_args == emr_spec.bootstrap_args(settings, deployed["requirements"], deployed["wheelhouse"])
    assert "--wheelhouse" in node.bootstrap_args
    assert "from the wheelhouse, no package index" in node.bootstrap_stderr
    assert hashlib.sha256(node.weights_file.read_bytes()).hexdigest() == project.onnx_sha256
    probe = (
        "import importlib.util as u, onnxruntime, pandas, pyarrow, cv2\n"
        "print(u.find_spec('tensorflow') is None, u.find_spec('keras') is None, u.find_spec('pyspark') is None)"
    )
    out = subprocess.run([str(node.venv_python), "-c", probe], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    # No TensorFlow (onnx profile), and no pyspark: on EMR it comes from Spark's own python/lib.
    assert out.stdout.split() == ["True", "True", "True"]


def test_cluster_configuration_is_the_spec_plus_what_emr_adds(project: Project, emulation: Emulation) -> None:
    assert emulation.configurations == emr_spec.configurations(project.settings)
    confs, spec_defaults = emulation.cluster.confs, emu.classification(emulation.configurations, "spark-defaults")
    written = dict(line.split(" ", 1) for line in (confs.spark / "spark-defaults.conf").read_text().splitlines())
    added = {"spark.master", "spark.eventLog.enabled", "spark.eventLog.dir", *emu.EMULATION_SCHEDULING}
    assert set(written) == set(spec_defaults) | added
    assert not set(emu.EMULATION_SCHEDULING) & set(spec_defaults)  # added, never replacing the spec's
    for key, value in spec_defaults.items():
        assert written[key] == emu.EMULATION_RESOURCES.get(key, value), key
    assert written["spark.master"] == emulation.cluster.master_url
    env_sh = (confs.spark / "spark-env.sh").read_text()
    assert f"export PYSPARK_PYTHON={project.settings.venv_python}" in env_sh
    assert emu.UNREACHABLE_DEFAULT_FS in (confs.hadoop / "core-site.xml").read_text()
    assert emulation.cluster.status()["aliveworkers"] == emu.WORKERS


# --- the steps ---------------------------------------------------------------------------------------


def test_console_step_runs_on_both_workers(project: Project, emulation: Emulation) -> None:
    """The step the stack publishes (ConsoleStepJson), added to the cluster and read back."""
    step = emr_spec.spark_step(
        name="featurize",
        zip_uri=project.deployed["zip"],
        entry_uri=project.deployed["entry"],
        job_args=console_run(project.settings, BUCKET).argv(),
    )
    emr = project.client("emr")
    [step_id] = emr.add_job_flow_steps(JobFlowId=project.cluster_id, Steps=[step])["StepIds"]
    args = emr.describe_step(ClusterId=project.cluster_id, StepId=step_id)["Step"]["Config"]["Args"]
    assert args == step["HadoopJarStep"]["Args"]
    result = emulation.run_step("console", args)
    check_cluster_run(emulation, result, emulation.mirror / BUCKET / "raw")


def test_submitted_step_runs_on_both_workers(project: Project, emulation: Emulation) -> None:
    """`featurizer submit --stack`: defaults from the stack outputs, the step read back from the cluster."""
    argv = [str(emu.FEATURIZER), "--endpoint-url", project.endpoint, "submit", "--stack", STACK]
    argv += ["--input", f"s3://{BUCKET}/raw/fruits/", "--output", f"s3://{BUCKET}/results/emr-submit/"]
    argv += ["--out", str(project.root / "dist-submit")]
    done = emu.run(
        argv,
        env=project.env(),
        cwd=project.root,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    step_id = done.stdout.splitlines()[0]
    step = project.client("emr").describe_step(ClusterId=project.cluster_id, StepId=step_id)["Step"]
    args = step["Config"]["Args"]
    defaults = RunDefaults.from_settings(project.settings, bucket=BUCKET)
    assert args[args.index("--weights") + 1] == defaults.weights
    assert args[args.index("--engine") + 1] == "onnx"
    assert args[args.index("--model-cache") + 1] == defaults.model_cache == f"s3://{BUCKET}/cache/models/"
    result = emulation.run_step("submit", args)
    check_cluster_run(emulation, result, emulation.mirror / BUCKET / "raw" / "fruits")


def test_an_int8_model_quantized_on_one_cluster_driver_serves_the_next(project: Project, emulation: Emulation) -> None:
    """--model-cache: the first int8 run quantizes on its driver and keeps the model in the project bucket's
    cache/models/; the next run's driver (another HOME: an empty local cache, as on another node or a new
    cluster) takes it from there instead of quantizing again."""
    submit = [str(emu.FEATURIZER), "--endpoint-url", project.endpoint, "submit", "--stack", STACK]
    submit += ["--input", f"s3://{BUCKET}/raw/fruits/", "--engine", "onnx-int8", "--k", "3"]
    submit += ["--out", str(project.root / "dist-int8")]
    records = []
    for run in ("int8-first", "int8-second"):
        argv = [*submit, "--output", f"s3://{BUCKET}/results/{run}/", "--", "--calibration-images", "8"]
        done = emu.run(argv, env=project.env(), cwd=project.root, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        step = project.client("emr").describe_step(ClusterId=project.cluster_id, StepId=done.stdout.splitlines()[0])
        result = emulation.run_step(run, step["Step"]["Config"]["Args"])
        assert result.returncode == 0, emu.tail(result.stderr)
        assert result.metadata["engine"] == "onnx-int8" and result.metadata["counts"]["rejected"] == 0
        records.append(result.metadata["quantization"])
    first, second = records
    shared = (emulation.mirror / BUCKET / "cache" / "models").as_uri()
    assert first["from_cache"] is False and first["quantization_s"] > 0 and first["cache_error"] is None
    assert first["cache_levels"][-1] == shared
    assert (emulation.mirror / BUCKET / "cache" / "models" / f"int8-{first['cache_key']}.onnx").is_file()
    assert second["cache_levels"][0] != first["cache_levels"][0]  # each driver had its own, empty, local cache
    assert second["cache_key"] == first["cache_key"] and second["from_cache"] is True
    assert second["cache_file"] == f"{shared}/int8-{first['cache_key']}.onnx" and second["quantization_s"] is None


def test_a_scheme_less_weights_path_resolves_against_hdfs_and_fails(project: Project, emulation: Emulation) -> None:
    """Why the staged weights are passed as file://: a bare path goes to fs.defaultFS, HDFS on EMR."""
    bare = str(emulation.node.weights_file)
    run = RunSpec(
        input=f"s3://{BUCKET}/raw/", output=f"s3://{BUCKET}/results/scheme-less/", weights=bare
    ).with_defaults(RunDefaults.from_settings(project.settings))
    with pytest.raises(RunSpecError, match="without a scheme"):  # the launcher refuses it before any step
        run.argv()
    # What a hand-written step (aws emr add-steps) would still send, checked only by the job's own parser:
    args = ["--input", run.input, "--output", run.output, "--weights", bare, "--engine", "onnx"]
    step = emr_spec.spark_step(
        name="scheme-less", zip_uri=project.deployed["zip"], entry_uri=project.deployed["entry"], job_args=args
    )
    result = emulation.run_step("scheme_less", step["HadoopJarStep"]["Args"])
    assert result.returncode != 0, result.stdout[-2000:]
    # spark-submit's PythonRunner merges the Python driver's stderr into its own stdout: the job's error line
    # is there (on EMR: in the step's stdout, or in cluster mode the driver container's stdout).
    out = result.stdout
    [line] = [line for line in out.splitlines() if line.startswith("featurizer: ")] or [""]
    assert line, f"no one-line error from the job on stdout:\n{out[-3000:]}"
    # The bare path went to the HDFS namenode of fs.defaultFS (Hadoop may spell 127.0.0.1 as localhost), not
    # to the node's disk: the job's error (or its traceback) names that address.
    assert re.search(r"\b(localhost|127\.0\.0\.1):9\b", out), f"stdout:{out[-3000:]}\nstderr:{emu.tail(result.stderr)}"
    assert result.output is not None and not (result.output / "_SUCCESS").exists()


# --- checks ------------------------------------------------------------------------------------------


def check_cluster_run(emulation: Emulation, result: StepRun, input_root: Path) -> None:
    assert result.returncode == 0, f"step {result.name} failed:\n{emu.tail(result.stderr)}"
    assert result.output is not None and (result.output / "_SUCCESS").is_file()
    metadata, cluster, node = result.metadata, emulation.cluster, emulation.node
    hosts = set(cluster.worker_hosts)

    # Spark's own record first (independent of what the job reports about itself): the application ran on
    # the cluster's master, its tasks on executors of both workers, none in the driver (local mode's "driver").
    assert len(result.event_logs) == 1, result.event_logs
    log = emu.read_event_log(cluster.confs.event_log, result.event_logs[0])
    assert log.master == cluster.master_url, f"the job ran with master {log.master}, not the cluster's"
    all_tasks = [task for tasks in log.group_tasks.values() for task in tasks]
    assert all_tasks and "driver" not in {executor for executor, _ in all_tasks}, "tasks ran in the driver"
    assert {e["host"] for e in log.executors.values()} == hosts
    for worker_dir in cluster.worker_dirs:
        assert (worker_dir / log.app_id).is_dir(), f"no executor of {log.app_id} ran on {worker_dir}"

    # metadata.json's spark section says the same: the cluster's master and settings ruled, not the
    # job's local defaults, and the featurize stage's tasks ran on both workers' executors.
    spark = metadata["spark"]
    assert spark["app_id"] == log.app_id
    assert spark["master"] == cluster.master_url, spark
    assert spark["launched_by_spark_submit"] is True and spark["deploy_mode"] == "client"
    defaults = cluster.confs.spark_defaults
    recorded = {k: v for k, v in spark["settings"].items() if k in defaults}
    assert {"spark.executor.cores", "spark.executor.memory", "spark.task.maxFailures"} <= set(recorded)
    assert recorded == {k: defaults[k] for k in recorded}
    executors = spark["featurize"]["executors"]
    assert "driver" not in {e["id"] for e in executors}
    assert {e["host"] for e in executors} == hosts, executors
    featurize = log.group_tasks[f"featurize-{metadata['run_id']}"]
    assert {host for _, host in featurize} == hosts, featurize
    assert {executor for executor, _ in featurize} == {e["id"] for e in executors}

    # The weights are the bootstrap's staged copy, read as a node-local file; the onnx engine, no TensorFlow.
    assert metadata["weights"]["source"] == node.weights_file.as_uri()
    assert metadata["weights"]["sha256"] == emulation.project.onnx_sha256
    assert metadata["engine"] == "onnx"
    assert not {"tensorflow", "tensorflow-cpu", "keras"} & set(metadata["versions"])
    assert "onnxruntime" in metadata["versions"]

    check_output_contract(result.output, metadata, emu.labelled_images(input_root))


def check_output_contract(out: Path, metadata: dict, expected: dict[str, str]) -> None:
    """README's output contract, as tests/job/test_pipeline.py checks it for local runs."""
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == OUTPUT_NAMES
    assert json.loads((out / "metadata.json").read_text()) == metadata
    n = len(expected)
    assert n == 10 * PER_CLASS
    counts = metadata["counts"]
    assert counts == {"listed": n, "featurized": n, "rejected": 0, "model_processed": n}
    assert counts["listed"] == counts["featurized"] + counts["rejected"]

    assert contract.features_schema(out) == contract.FEATURES_SCHEMA
    features = pq.read_table(out / "features").to_pandas().sort_values("path").reset_index(drop=True)
    assert dict(zip(features["path"], features["label"], strict=True)) == expected
    assert {len(v) for v in features["features"]} == {1280}
    pca = metadata["pca"]
    k = pca["k"]
    assert {len(v) for v in features["pca_features"]} == {k} and 1 <= k <= n
    cumulative = pca["cumulative_explained_variance"]
    assert cumulative[k - 1] >= pca["variance_target"] == 0.99
    assert k == 1 or cumulative[k - 2] < 0.99
    rejected = pq.read_table(out / "rejected")
    assert rejected.num_rows == 0 and rejected.schema.names == ["path", "reason"]

    # The PCA equals numpy's on the same features (the cluster's Java LAPACK must not be trusted blindly).
    x = np.stack(features["features"]).astype(np.float64)
    std = x.std(axis=0, ddof=1)
    z = np.where(std > 0, (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)
    s = np.linalg.svd(z, compute_uv=False)
    ratios = s**2 / np.sum(s**2)
    np.testing.assert_allclose(pca["explained_variance"][: len(ratios)], ratios, atol=1e-8)
    assert float(np.abs(x).mean()) > 1e-3  # calibrated weights: real features, not ~1e-11

    with Image.open(out / "explained_variance.png") as img:
        assert img.format == "PNG"
