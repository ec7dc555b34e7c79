"""Fault injection for the emulated EMR cluster (tests/emr/test_faults.py), with no seam in the job's code.

Two injectors, both switched on per step by ``--conf`` arguments the test adds to spark-submit:

- :func:`write_injector`: a ``sitecustomize.py`` that executors' Python workers load when
  ``spark.executorEnv.PYTHONPATH`` names its folder (PySpark puts that variable on the workers' path; the
  driver never sees it). It wraps ``job.featurize.featurize_batch`` once the job's zip imports it and, per
  model batch, writes a ``start`` marker (partition, attempt, pid, parent pid, paths) and a ``done`` marker
  into ``FEATURIZER_FAULTS_DIR``; it can hold batches of partitions >= ``FEATURIZER_FAULTS_HOLD_FROM``
  while ``<dir>/hold`` exists (so a test kills a process while a task of its choice runs), and it can end
  the worker with ``os._exit`` on a batch holding a path that contains ``FEATURIZER_FAULTS_POISON`` (a
  poison input: the same task crashes its Python worker on every attempt, like an out-of-memory kill).
- :func:`build_flaky_fs`: a Hadoop ``LocalFileSystem`` whose ``create`` throws an ``IOException`` for paths
  matching ``featurizer.faults.fail.pattern``, ``featurizer.faults.fail.times`` times in all (across every
  JVM of the cluster: each failure claims a token file in ``featurizer.faults.fail.dir``). Set as
  ``spark.hadoop.fs.file.impl`` on the driver's and executors' class path.

And the processes of the emulated cluster, found through /proc (executor JVMs, Python workers, drivers).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.emr import cluster as emu

SITECUSTOMIZE = r'''
"""Test-only fault injector for the featurizer's Python workers (tests/emr/faults.py)."""
import os
import sys

_DIR = os.environ.get("FEATURIZER_FAULTS_DIR")


def _marker(kind, record):
    name = "%s-p%05d-a%d-pid%d" % (kind, record["partition"], record["attempt"], os.getpid())
    tmp = os.path.join(_DIR, "." + name + ".tmp")
    with open(tmp, "w") as handle:
        handle.write(__import__("json").dumps(record))
    os.replace(tmp, os.path.join(_DIR, name + ".json"))


def _wrap(original):
    def featurize_batch(pdf, *args, **kwargs):
        import time

        from pyspark import TaskContext

        context = TaskContext.get()
        paths = [str(p) for p in pdf["path"]]
        record = {
            "partition": context.partitionId() if context else -1,
            "attempt": context.attemptNumber() if context else -1,
            "stage": context.stageId() if context else -1,
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "host": os.environ.get("SPARK_LOCAL_IP", ""),
            "paths": paths,
            "time": time.time(),
        }
        _marker("start", record)
        poison = os.environ.get("FEATURIZER_FAULTS_POISON")
        if poison and any(poison in p for p in paths):
            os._exit(86)  # like the OOM killer: no exception, no cleanup
        hold_from = int(os.environ.get("FEATURIZER_FAULTS_HOLD_FROM", "-1"))
        if 0 <= hold_from <= record["partition"]:
            deadline = time.time() + 300
            while os.path.exists(os.path.join(_DIR, "hold")) and time.time() < deadline:
                time.sleep(0.05)
        result = original(pdf, *args, **kwargs)
        _marker("done", record)
        return result

    return featurize_batch


if _DIR:
    import importlib.abc

    class _Loader(importlib.abc.Loader):
        def __init__(self, inner):
            self.inner = inner

        def create_module(self, spec):
            return self.inner.create_module(spec)

        def exec_module(self, module):
            self.inner.exec_module(module)
            module.featurize_batch = _wrap(module.featurize_batch)

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname != "job.featurize":
                return None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    spec.loader = _Loader(spec.loader)
                    return spec
            return None

    sys.meta_path.insert(0, _Finder())
'''

FLAKY_FS_CLASS = "featurizer.faults.FlakyLocalFileSystem"
FLAKY_FS_JAVA = r"""
package featurizer.faults;

import java.io.IOException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Paths;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.util.Progressable;

/** Hadoop's local filesystem, with injected IOExceptions on create() (tests/emr/faults.py). */
public class FlakyLocalFileSystem extends LocalFileSystem {
  @Override
  public FSDataOutputStream create(Path f, FsPermission permission, boolean overwrite, int bufferSize,
      short replication, long blockSize, Progressable progress) throws IOException {
    String pattern = getConf().get("featurizer.faults.fail.pattern");
    String dir = getConf().get("featurizer.faults.fail.dir");
    if (pattern != null && dir != null && f.toString().matches(pattern)) {
      int times = getConf().getInt("featurizer.faults.fail.times", 1);
      for (int i = 0; i < times; i++) {
        try {
          Files.createFile(Paths.get(dir, "failure-" + i));
        } catch (FileAlreadyExistsException taken) {
          continue;
        }
        Files.write(Paths.get(dir, "failure-" + i), f.toString().getBytes("UTF-8"));
        throw new IOException("injected storage fault " + (i + 1) + "/" + times + " creating " + f);
      }
    }
    return super.create(f, permission, overwrite, bufferSize, replication, blockSize, progress);
  }
}
"""


def write_injector(folder: Path) -> Path:
    """The sitecustomize folder (for spark.executorEnv.PYTHONPATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


def build_flaky_fs(folder: Path) -> Path:
    """Compile FlakyLocalFileSystem against this Spark's jars; return the jar."""
    src = folder / "src" / "featurizer" / "faults" / "FlakyLocalFileSystem.java"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(FLAKY_FS_JAVA)
    classes = folder / "classes"
    classes.mkdir(exist_ok=True)
    done = emu.run(
        ["javac", "-nowarn", "-d", str(classes), "-cp", f"{emu.SPARK_HOME / 'jars'}/*", str(src)],
        env=dict(os.environ),
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    jar = folder / "flaky-fs.jar"
    done = emu.run(["jar", "cf", str(jar), "-C", str(classes), "."], env=dict(os.environ), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return jar


# --- the injector's markers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    kind: str  # "start" or "done"
    partition: int
    attempt: int
    pid: int
    ppid: int
    paths: tuple[str, ...]
    host: str  # the worker's address (the executor's SPARK_LOCAL_IP)


def batches(folder: Path, kind: str | None = None) -> list[Batch]:
    found = []
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        marker = path.name.split("-", 1)[0]
        if kind is None or marker == kind:
            found.append(
                Batch(
                    marker,
                    record["partition"],
                    record["attempt"],
                    record["pid"],
                    record["ppid"],
                    tuple(record["paths"]),
                    record.get("host", ""),
                )
            )
    return found


def running(folder: Path) -> list[Batch]:
    """Batches started and not done (their worker may have died since)."""
    done = {(b.partition, b.attempt, b.pid) for b in batches(folder, "done")}
    return [b for b in batches(folder, "start") if (b.partition, b.attempt, b.pid) not in done]


# --- processes -------------------------------------------------------------------------------------------


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def executor_jvms(app_id: str, host: str | None = None) -> dict[int, str]:
    """pid -> host of the executor JVMs (CoarseGrainedExecutorBackend) of an application."""
    found = {}
    for pid in pids():
        args = cmdline(pid)
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" not in args or app_id not in args:
            continue
        executor_host = args[args.index("--hostname") + 1]
        if host is None or executor_host == host:
            found[pid] = executor_host
    return found


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for p in pids():
        try:
            children.setdefault(parent_pid(p), []).append(p)
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill(pids_: Iterable[int]) -> list[int]:
    killed = []
    for pid in pids_:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            continue
    return killed


def worker_daemon_pid(cluster: emu.StandaloneCluster, n: int) -> int:
    """The pid of worker ``n``'s daemon (1-based), from spark-daemon.sh's pid file."""
    pid_dir = cluster.worker_dirs[n - 1].parent / "spark_pid_dir"
    [pid_file] = list(pid_dir.glob("*Worker*.pid"))
    return int(pid_file.read_text().strip())


def wait_for(check, what: str, timeout: float, *, process: subprocess.Popen | None = None, poll: float = 0.1):
    """Poll ``check()`` until truthy; fail early if ``process`` (the step's driver) has exited.

    ``check`` errors are not tolerated here: a fault test's checks read what the test itself controls.
    """
    stopped = emu.process_ended(process, "the step") if process is not None else None
    return emu.wait_until(check, what, timeout, poll=poll, stopped=stopped, tolerate=())


# --- a step run in the background (to be faulted while it runs) --------------------------------------


@dataclass
class RunningStep:
    """A step's driver (spark-submit, client mode) started in its own process group."""

    emulation: object  # tests.emr.conftest.Emulation
    name: str
    step_args: list[str]
    argv: list[str]
    output: Path
    home: Path
    process: subprocess.Popen
    events_before: set[str]
    started: float

    def app_id(self, timeout: float = 120) -> str:
        """The application id, once the driver has registered (its event log file appears)."""
        events = self.emulation.cluster.confs.event_log

        def new_log() -> str | None:
            added = sorted({p.name for p in events.iterdir()} - self.events_before)
            return added[0].removesuffix(".inprogress") if added else None

        return wait_for(new_log, f"step {self.name}: application started", timeout, process=self.process)

    def kill_driver(self) -> None:
        """SIGKILL the driver: spark-submit's JVM (the SparkContext) and the Python driver, at once."""
        os.killpg(self.process.pid, signal.SIGKILL)

    def finish(self, timeout: float = 600):
        from tests.emr.conftest import StepRun

        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            raise
        seconds = round(time.monotonic() - self.started, 1)
        stdout, stderr = (self.home / "stdout").read_text(), (self.home / "stderr").read_text()
        self.emulation.timings[f"step_{self.name}"] = seconds
        metadata = {}
        if (self.output / "metadata.json").is_file():
            metadata = json.loads((self.output / "metadata.json").read_text())
        events = self.emulation.cluster.confs.event_log
        added = sorted({p.name for p in events.iterdir()} - self.events_before)
        return StepRun(
            self.name,
            self.step_args,
            self.argv,
            self.process.returncode,
            stdout,
            stderr,
            self.output,
            seconds,
            metadata,
            added,
        )


def start_step(emulation, name: str, step_args: list[str]) -> RunningStep:
    """Like Emulation.run_step, without waiting: the step's driver runs in its own process group."""
    emulation.download_artifacts(step_args)
    argv = emu.local_argv(step_args, artifacts=emulation.artifacts, mirror=emulation.mirror)
    output = emu.file_uri_path(argv[argv.index("--output") + 1])
    home = emulation.project.root / "driver" / name
    home.mkdir(parents=True)
    env = {**emu.spark_env_base(emulation.cluster.confs), "HOME": str(home)}
    before = {p.name for p in emulation.cluster.confs.event_log.iterdir()}
    with (home / "stdout").open("w") as out, (home / "stderr").open("w") as err:
        process = subprocess.Popen(argv, env=env, cwd=home, stdout=out, stderr=err, start_new_session=True)
    return RunningStep(emulation, name, list(step_args), argv, output, home, process, before, time.monotonic())
