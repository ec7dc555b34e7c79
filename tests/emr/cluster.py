"""EMR, emulated on one machine: S3/EMR/CloudFormation in moto_server, the nodes' bootstrap for real, and a
standalone Spark cluster (one master, two single-core workers) configured from the cluster spec.

What is real here: the AWS CLI and the `featurizer` CLI talking HTTP to moto_server, `bootstrap/install.sh`
(wheelhouse from S3, no package index, weights staged and checked), the spark-submit argv of the steps as EMR
stores them (read back with describe_step), spark-defaults/spark-env as EMR writes them from the cluster's
``Configurations`` (read back with describe_cluster), and what EMR adds on its own: ``spark.master`` in
spark-defaults, ``HADOOP_CONF_DIR`` with an HDFS ``fs.defaultFS``, an event log.

What differs from EMR, each in one place below:

- YARN -> Spark standalone (what the pip ``pyspark`` can start): ``spark.master`` is ``spark://...`` instead of
  ``yarn``, the yarn-site classification is written but unused, and ``--deploy-mode cluster`` becomes
  ``client`` (standalone has no cluster mode for Python applications): :func:`local_argv`.
- Sizes: :data:`EMULATION_RESOURCES` (the only spec settings replaced in spark-defaults), and
  :data:`EMULATION_SCHEDULING` (two settings added so both executors are registered before the job plans).
- S3 -> local: the job zip and entry point are *downloaded from moto* and passed as local paths; the step's
  ``--input``/``--output`` become ``file://`` URIs of a local mirror (the input is synced from moto):
  :func:`local_argv`. Nothing else in the step changes.
- Nodes -> loopback addresses: worker ``n`` binds to ``127.0.0.(n+1)``, so each "node" has its own host name
  (executors of different workers report different hosts, as on EMR). They share one disk, so the bootstrap
  runs once and its venv and staged weights serve the driver and both workers.
- ``/usr/lib/spark`` -> the pip ``pyspark`` folder (:data:`SPARK_HOME`). The bootstrap venv has no pyspark
  (on EMR it comes from ``/usr/lib/spark/python``): spark-submit puts ``$SPARK_HOME/python/lib/pyspark.zip``
  and the py4j zip on the driver's PYTHONPATH, and executors do the same for their Python workers; the pip
  ``pyspark`` ships both zips in the same place, so nothing has to be added for the venv's python.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pyspark

from tests.offline import no_index_env

VENV_BIN = Path(sys.executable).parent
AWS_CLI = VENV_BIN / "aws"
MOTO_SERVER = VENV_BIN / "moto_server"
FEATURIZER = VENV_BIN / "featurizer"
# EMR's /usr/lib/spark: the pip pyspark has bin/, sbin/spark-daemon.sh, jars/ and python/lib/*.zip.
SPARK_HOME = Path(pyspark.__file__).resolve().parent
SPARK_SUBMIT = SPARK_HOME / "bin" / "spark-submit"
SPARK_DAEMON = SPARK_HOME / "sbin" / "spark-daemon.sh"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"

REGION = "us-east-1"

# A scheme-less path resolves against fs.defaultFS, HDFS on EMR. Nothing listens on port 9 (discard).
UNREACHABLE_DEFAULT_FS = "hdfs://127.0.0.1:9"

# The emulation's only departures from the spec's spark-defaults: the spec sizes executors for m5.xlarge
# YARN containers (2 cores, ~3 GB heap + ~3 GB overhead each, a ~3.8 GB driver); this machine has 2 shared
# vCPUs and a few GB free. One single-core executor per worker, small heaps. memoryOverhead stays as the spec
# says (standalone does not use it: it only sizes YARN/Kubernetes containers).
EMULATION_RESOURCES = {
    "spark.executor.cores": "1",
    "spark.executor.memory": "1g",
    "spark.driver.memory": "1g",
}
WORKER_CORES = 1
WORKER_MEMORY = "2g"
WORKERS = 2
# Added for determinism, not from the spec: the driver starts scheduling only once both executors have
# registered (at most Spark's default 30 s). Standalone's default ratio is 0, and executor JVMs start ~6 s after
# the application on this shared machine, about 2 s before the job plans its featurize partitions from the
# registered cores (job.session.task_slots: no maxExecutors/maxCores in the spec): without it, one worker
# could get every task when the machine is slow. (YARN waits the same way for non-dynamic allocation.)
EMULATION_SCHEDULING = {
    "spark.cores.max": str(WORKERS * WORKER_CORES),
    "spark.scheduler.minRegisteredResourcesRatio": "1.0",
}
DAEMON_MEMORY = "512m"  # master and worker JVMs (Spark's default is 1g each)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], Any],
    what: str,
    timeout: float,
    *,
    poll: float = 0.2,
    stopped: Callable[[], str | None] | None = None,
    tolerate: tuple[type[BaseException], ...] = (OSError, ValueError),
) -> Any:
    """Poll ``check()`` until it returns something truthy; fail after ``timeout`` seconds.

    ``stopped()`` returns why waiting is pointless (the process that should make ``check`` true has
    ended), else None: the wait then fails at once with that reason. Errors in ``tolerate`` raised by
    ``check`` (a file read while it is being written) count as "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*tolerate):
            value = check()
            if value:
                return value
        reason = stopped() if stopped is not None else None
        if reason:
            raise AssertionError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(poll)


def process_ended(process: subprocess.Popen, who: str = "the process") -> Callable[[], str | None]:
    """A ``stopped`` callback for wait_until: the reason once ``process`` has exited."""
    return lambda: None if process.poll() is None else f"{who} ended first (exit {process.returncode})"


# --- AWS (moto_server) ----------------------------------------------------------------------------


@dataclass
class Moto:
    """A moto_server process on 127.0.0.1 and a free port."""

    log: Path
    url: str = ""
    process: subprocess.Popen | None = None

    def start(self) -> Moto:
        port = free_port()
        handle = self.log.open("w")
        self.process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=handle, stderr=subprocess.STDOUT
        )
        handle.close()
        self.url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).close() is None,
            "moto_server",
            30,
            stopped=process_ended(self.process, "moto_server"),
        )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def aws_env(endpoint: str, home: Path, *, keep_home: bool = False) -> dict[str, str]:
    """Fake credentials, the moto endpoint, no profile or config file of this machine.

    ``keep_home``: the real HOME (``featurizer deploy`` builds the wheelhouse from the download cache under
    ``~/.cache/featurizer/wheelhouse``, filled once from PyPI, as on a developer's machine).
    """
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "XDG_CACHE_HOME")}
    keep.update({k: v for k, v in os.environ.items() if k.startswith("FEATURIZER_WHEELHOUSE")})
    return {
        **keep,
        "HOME": os.environ.get("HOME", str(home)) if keep_home else str(home),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def run(argv: Sequence[str], *, env: Mapping[str, str], timeout: float, cwd: Path | None = None) -> Any:
    """A subprocess with its output captured; never raises on a non-zero exit (the caller asserts)."""
    return subprocess.run(
        [str(a) for a in argv], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def aws_cli(env: Mapping[str, str], *args: str, timeout: float = 300) -> str:
    """The real AWS CLI against moto; returns stdout, fails the test on a non-zero exit."""
    done = run([str(AWS_CLI), *args], env=env, timeout=timeout)
    assert done.returncode == 0, f"aws {' '.join(args)}: {done.stderr[-2000:]}"
    return str(done.stdout)


# --- a node: the bootstrap action -----------------------------------------------------------------


def node_env(root: Path, endpoint: str) -> dict[str, str]:
    """A fresh node: the AWS CLI and python3.11 on PATH, S3 at moto, no way to reach a package index."""
    bin_dir = root / "node-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    real_python = subprocess.run(
        ["python3.11", "-c", "import sys; print(sys.executable)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for name, target in (("aws", AWS_CLI), ("python3.11", Path(real_python))):
        if not (bin_dir / name).exists():
            (bin_dir / name).symlink_to(target)
    home = root / "node-home"
    home.mkdir(exist_ok=True)
    return {
        **aws_env(endpoint, home),
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        **no_index_env(),
    }


# --- the cluster's configuration files ------------------------------------------------------------


def classification(configurations: Sequence[Mapping[str, Any]], name: str, *, nested: str | None = None) -> dict:
    """The properties of one classification (or of a nested one, e.g. spark-env/export)."""
    for config in configurations:
        if config["Classification"] == name:
            if nested is None:
                return dict(config.get("Properties") or {})
            return classification(config.get("Configurations") or [], nested)
    return {}


@dataclass(frozen=True)
class ConfDirs:
    spark: Path  # SPARK_CONF_DIR (EMR: /etc/spark/conf)
    hadoop: Path  # HADOOP_CONF_DIR (EMR: /etc/hadoop/conf)
    event_log: Path
    spark_defaults: dict[str, str]
    replaced: dict[str, tuple[str | None, str]]  # key -> (spec's value, emulation's value)


def write_confs(configurations: Sequence[Mapping[str, Any]], root: Path, *, master_url: str) -> ConfDirs:
    """SPARK_CONF_DIR and HADOOP_CONF_DIR as EMR writes them from the cluster's Configurations.

    spark-defaults: the classification, then what EMR adds itself (``spark.master``; the event log, which
    EMR writes to hdfs:///var/log/spark/apps, here a local folder), then :data:`EMULATION_RESOURCES` and
    :data:`EMULATION_SCHEDULING`.
    spark-env.sh: the export sub-classification as ``export K=V`` lines, plus EMR's own ``HADOOP_CONF_DIR``
    and this emulation's node address and daemon heap.
    """
    spark_dir, hadoop_dir, events = root / "spark-conf", root / "hadoop-conf", root / "spark-events"
    for folder in (spark_dir, hadoop_dir, events):
        folder.mkdir(parents=True, exist_ok=True)

    spec_defaults = classification(configurations, "spark-defaults")
    defaults = dict(spec_defaults)
    defaults["spark.master"] = master_url
    defaults["spark.eventLog.enabled"] = "true"
    defaults["spark.eventLog.dir"] = events.as_uri()
    emulation = {**EMULATION_RESOURCES, **EMULATION_SCHEDULING}
    replaced = {k: (spec_defaults.get(k), v) for k, v in emulation.items() if spec_defaults.get(k) != v}
    defaults.update(emulation)
    (spark_dir / "spark-defaults.conf").write_text("".join(f"{k} {v}\n" for k, v in defaults.items()))

    exports = classification(configurations, "spark-env", nested="export")
    lines = [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    lines += [
        f"export HADOOP_CONF_DIR={shlex.quote(str(hadoop_dir))}",
        # Each emulated node's own address: a worker started with SPARK_LOCAL_IP=127.0.0.N keeps it.
        'export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}"',
        f"export SPARK_DAEMON_MEMORY={DAEMON_MEMORY}",
    ]
    (spark_dir / "spark-env.sh").write_text("#!/usr/bin/env bash\n" + "\n".join(lines) + "\n")

    # Unused by standalone Spark (no YARN here); written so the emulated node has every classification.
    (hadoop_dir / "yarn-site.xml").write_text(_hadoop_xml(classification(configurations, "yarn-site")))
    (hadoop_dir / "core-site.xml").write_text(_hadoop_xml({"fs.defaultFS": UNREACHABLE_DEFAULT_FS}))
    return ConfDirs(spark_dir, hadoop_dir, events, defaults, replaced)


def _hadoop_xml(properties: Mapping[str, str]) -> str:
    body = "".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>\n" for k, v in properties.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n'


# --- the standalone cluster -------------------------------------------------------------------------


@dataclass
class Daemon:
    cls: str
    args: list[str]
    env: dict[str, str]
    log_dir: Path

    def start(self) -> None:
        done = run(["bash", str(SPARK_DAEMON), "start", self.cls, "1", *self.args], env=self.env, timeout=60)
        assert done.returncode == 0, f"spark-daemon.sh start {self.cls}: {done.stdout}{done.stderr}"

    def stop(self) -> None:
        run(["bash", str(SPARK_DAEMON), "stop", self.cls, "1"], env=self.env, timeout=60)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.log_dir.glob("*.out")))


@dataclass
class StandaloneCluster:
    """One master (the EMR primary node) and :data:`WORKERS` single-core workers (core nodes)."""

    root: Path
    confs: ConfDirs
    master_port: int
    webui_port: int
    daemons: list[Daemon] = field(default_factory=list)
    worker_dirs: list[Path] = field(default_factory=list)
    worker_hosts: list[str] = field(default_factory=list)

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def env(self, name: str, local_ip: str) -> dict[str, str]:
        """A node's environment: its own work/pid/log folders and address, the cluster's conf dirs."""
        node = self.root / name
        dirs = {key: node / key.lower() for key in ("SPARK_WORKER_DIR", "SPARK_PID_DIR", "SPARK_LOG_DIR")}
        for folder in dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            **spark_env_base(self.confs),
            **{k: str(v) for k, v in dirs.items()},
            "SPARK_IDENT_STRING": f"emr-{name}",
            "SPARK_LOCAL_IP": local_ip,
            "HOME": str(node),
        }

    def start(self) -> StandaloneCluster:
        env = self.env("primary", "127.0.0.1")
        master = Daemon(
            MASTER_CLASS,
            ["--host", "127.0.0.1", "--port", str(self.master_port), "--webui-port", str(self.webui_port)],
            env,
            Path(env["SPARK_LOG_DIR"]),
        )
        master.start()
        self.daemons.append(master)
        for n in range(1, WORKERS + 1):
            host = f"127.0.0.{n + 1}"
            env = self.env(f"core{n}", host)
            args = ["--host", host, "--webui-port", str(free_port()), "--cores", str(WORKER_CORES)]
            args += ["--memory", WORKER_MEMORY, self.master_url]
            worker = Daemon(WORKER_CLASS, args, env, Path(env["SPARK_LOG_DIR"]))
            worker.start()
            self.daemons.append(worker)
            self.worker_dirs.append(Path(env["SPARK_WORKER_DIR"]))
            self.worker_hosts.append(host)
        try:
            wait_until(lambda: self.status().get("aliveworkers") == WORKERS, "two ALIVE workers", 90, poll=0.5)
        except TimeoutError:
            raise TimeoutError("workers did not register:\n" + "\n".join(d.log() for d in self.daemons)) from None
        return self

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.webui_port}/json/", timeout=5) as response:
            return dict(json.load(response))

    def stop(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()


def spark_env_base(confs: ConfDirs) -> dict[str, str]:
    """What every Spark process of the emulated cluster starts with (EMR: /etc/spark/conf, /usr/lib/spark)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "JAVA_HOME")}
    return {
        **keep,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_CONF_DIR": str(confs.spark),
        "HADOOP_CONF_DIR": str(confs.hadoop),
    }


# --- steps --------------------------------------------------------------------------------------------


def local_argv(args: Sequence[str], *, artifacts: Mapping[str, Path], mirror: Path) -> list[str]:
    """An EMR step's command-runner argv, runnable here; the substitutions are exactly these:

    - ``spark-submit`` -> this SPARK_HOME's ``bin/spark-submit``; ``--deploy-mode cluster`` -> ``client``;
    - job artifacts (``--py-files`` zip, entry point): s3:// URI -> the local copy downloaded from moto;
    - the job's ``--input``/``--output``/``--model-cache``: ``s3://BUCKET/KEY`` -> ``file://MIRROR/BUCKET/KEY``.

    Any other s3:// argument fails the test (this Spark has no S3 filesystem).
    """
    out = [str(a) for a in args]
    assert out[0] == "spark-submit", out
    out[0] = str(SPARK_SUBMIT)
    i = out.index("--deploy-mode")
    assert out[i + 1] == "cluster", out
    out[i + 1] = "client"
    for j, arg in enumerate(out):
        if arg in artifacts:
            out[j] = str(artifacts[arg])
        elif j > 0 and out[j - 1] in ("--input", "--output", "--model-cache") and arg.startswith("s3://"):
            out[j] = (mirror / arg.removeprefix("s3://")).as_uri() + ("/" if arg.endswith("/") else "")
    left = [a for a in out if "s3://" in a or "s3a://" in a]
    assert not left, f"s3 arguments without a local substitute: {left}"
    return out


def file_uri_path(uri: str) -> Path:
    assert uri.startswith("file:///"), uri
    return Path(uri.removeprefix("file://"))


# --- Spark's event log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventLog:
    app_id: str
    master: str | None
    executors: dict[str, dict[str, Any]]  # executor id -> {"host", "log_urls", "cores"}
    group_tasks: dict[str, list[tuple[str, str]]]  # job group -> [(executor id, host)] of successful tasks


def read_event_log(folder: Path, app_id: str) -> EventLog:
    """The application's event log (uncompressed JSON lines, Spark 3.5's default)."""
    [path] = [p for p in folder.iterdir() if p.name.startswith(app_id)]
    assert path.name == app_id, f"event log still in progress or compressed: {path.name}"
    executors: dict[str, dict[str, Any]] = {}
    stage_group: dict[int, str] = {}
    tasks: dict[str, list[tuple[str, str]]] = {}
    master = None
    for line in path.read_text().splitlines():
        event = json.loads(line)
        kind = event["Event"]
        if kind == "SparkListenerEnvironmentUpdate":
            master = event["Spark Properties"].get("spark.master")
        elif kind == "SparkListenerExecutorAdded":
            info = event["Executor Info"]
            executors[event["Executor ID"]] = {
                "host": info["Host"],
                "cores": info["Total Cores"],
                "log_urls": info.get("Log Urls", {}),
            }
        elif kind == "SparkListenerJobStart":
            group = (event.get("Properties") or {}).get("spark.jobGroup.id") or ""
            for stage in event["Stage IDs"]:
                stage_group[stage] = group
        elif kind == "SparkListenerTaskEnd" and event["Task End Reason"]["Reason"] == "Success":
            info = event["Task Info"]
            group = stage_group.get(event["Stage ID"], "")
            tasks.setdefault(group, []).append((info["Executor ID"], info["Host"]))
    return EventLog(app_id, master, executors, tasks)


# --- helpers for the contract checks ---------------------------------------------------------------


def labelled_images(root: Path) -> dict[str, str]:
    """``file:/abs/path`` (Spark's path column) -> class folder name, for every .jpg under ``root``."""
    return {f"file:{p}": p.parent.name for p in sorted(root.rglob("*.jpg"))}


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        timings[name] = round(time.monotonic() - start, 1)


def tail(text: str, n: int = 6000) -> str:
    return text[-n:]
