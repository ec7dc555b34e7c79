"""Follow a step to its end, and fetch its logs from the cluster's LogUri.

A plain poll loop instead of boto3's `step_complete` waiter, which gives up after 30 minutes
(60 polls x 30 s): a featurization run can take hours, and the deadline here is the user's
`--timeout`, or none (EMR has no step timeout: `cancel` cancels the step when it hits). The clock is
injected so tests run the loop without sleeping.

After a failure the logs that say why are found in the cluster's LogUri: the step's own
(`steps/<step-id>/{stderr,stdout,controller,syslog}.gz`), describe_step's FailureDetails.LogFile, and
in cluster deploy mode the driver's, in the application master's container
(`containers/application_<id>/container_<...>_01_000001/stderr.gz`). EMR copies them about every
5 minutes, so `collect_step_logs` waits for them a while.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from blueprint import s3uri
from launcher.aws import Aws
from launcher.errors import (
    AwsServiceError,
    ClusterTerminated,
    LauncherError,
    LogsNotAvailable,
    StepNotFound,
    WaitTimeout,
)
from launcher.submit import GONE

COMPLETED = "COMPLETED"
FAILURES = ("FAILED", "CANCELLED", "INTERRUPTED")
DEFAULT_POLL_SECONDS = 15.0
DEFAULT_LOG_WAIT_SECONDS = 360.0
"""How long to wait for EMR's log pusher (it copies step and container logs to S3 about every 5 minutes)."""
LOG_POLL_SECONDS = 30.0
CANCEL_OPTION = "SEND_INTERRUPT"


class Clock(Protocol):
    """Time source of the poll loop."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class StepStatus:
    """One observation of a step."""

    state: str
    reason: str | None = None
    log_file: str | None = None
    started: datetime | None = None
    ended: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """How a step ended, and how long we watched it."""

    cluster_id: str
    step_id: str
    state: str
    elapsed: float
    reason: str | None = None
    log_file: str | None = None
    started: datetime | None = None
    ended: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.state == COMPLETED


def step_status(aws: Aws, cluster_id: str, step_id: str) -> StepStatus:
    """Describe the step; the failure reason comes from FailureDetails or the state change reason."""
    step = aws.call("emr", "describe_step", ClusterId=cluster_id, StepId=step_id).get("Step")
    if not step or not step.get("Status"):
        raise StepNotFound(f"step {step_id} not found on cluster {cluster_id}")
    status = step["Status"]
    failure = status.get("FailureDetails") or {}
    change = status.get("StateChangeReason") or {}
    parts = [failure.get("Reason"), failure.get("Message"), change.get("Message")]
    reason = "; ".join(dict.fromkeys(p for p in parts if p)) or None
    timeline = status.get("Timeline") or {}
    return StepStatus(
        state=status["State"],
        reason=reason,
        log_file=failure.get("LogFile"),
        started=_utc(timeline.get("StartDateTime")),
        ended=_utc(timeline.get("EndDateTime")),
    )


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def wait_for_step(
    aws: Aws,
    cluster_id: str,
    step_id: str,
    *,
    timeout: float | None = None,
    poll: float = DEFAULT_POLL_SECONDS,
    clock: Clock | None = None,
    on_poll: Callable[[StepStatus, float], None] | None = None,
    on_error: Callable[[AwsServiceError], None] | None = None,
    max_consecutive_errors: int = 3,
    cancel: bool = False,
) -> Outcome:
    """Poll until the step ends; raise WaitTimeout after `timeout` s, ClusterTerminated if the cluster goes.

    AWS errors that survived botocore's retries are tolerated `max_consecutive_errors - 1` times
    in a row (a throttled poll should not end a two-hour watch), then raised. EMR has no step
    timeout of its own: with `cancel`, a timeout also asks EMR to cancel the step (SEND_INTERRUPT)
    and the WaitTimeout says whether EMR accepted.
    """
    clock = clock or SystemClock()
    aws.call("emr", "describe_cluster", ClusterId=cluster_id)  # ClusterNotFound before anything else
    start = clock.now()
    failures = 0
    last_state = "in an unknown state"
    while True:
        try:
            status = step_status(aws, cluster_id, step_id)
            failures = 0
        except AwsServiceError as err:
            failures += 1
            if failures >= max_consecutive_errors:
                raise
            if on_error:
                on_error(err)
        else:
            elapsed = clock.now() - start
            last_state = status.state
            if on_poll:
                on_poll(status, elapsed)
            if status.state == COMPLETED or status.state in FAILURES:
                return Outcome(
                    cluster_id,
                    step_id,
                    status.state,
                    elapsed,
                    status.reason,
                    log_file=status.log_file,
                    started=status.started,
                    ended=status.ended,
                )
            _check_cluster_alive(aws, cluster_id, step_id, status)
        elapsed = clock.now() - start
        if timeout is not None and elapsed >= timeout:
            late = f"step {step_id} still {last_state} after {format_duration(elapsed)}"
            again = f"`featurizer wait {step_id} --cluster-id {cluster_id}`"
            if cancel:
                raise WaitTimeout(f"{late}; {cancel_step(aws, cluster_id, step_id)}; {again} follows it to its end")
            raise WaitTimeout(f"{late}; it keeps running: {again} to follow it again")
        clock.sleep(poll if timeout is None else max(0.0, min(poll, timeout - elapsed)))


def cancel_step(aws: Aws, cluster_id: str, step_id: str) -> str:
    """Ask EMR to cancel the step (SEND_INTERRUPT); a sentence saying what EMR answered. Never raises.

    EMR answers per step: SUBMITTED (the cancellation is under way, the step ends CANCELLED) or
    FAILED with a reason (e.g. the step already ended). A refused call is reported, not raised:
    the timeout stays the outcome.
    """
    by_hand = (
        f"`aws emr cancel-steps --cluster-id {cluster_id} --step-ids {step_id} "
        f"--step-cancellation-option {CANCEL_OPTION}` to retry"
    )
    try:
        answer = aws.call(
            "emr", "cancel_steps", ClusterId=cluster_id, StepIds=[step_id], StepCancellationOption=CANCEL_OPTION
        )
    except LauncherError as err:
        return f"could not cancel it ({err}); it keeps running: {by_hand}"
    info = next((i for i in answer.get("CancelStepsInfoList", []) if i.get("StepId") == step_id), {})
    if info.get("Status") == "SUBMITTED":
        return f"cancellation requested ({CANCEL_OPTION}): EMR accepted it"
    why = info.get("Reason") or "no reason given"
    return f"EMR refused to cancel it ({info.get('Status') or 'no answer'}: {why}); it keeps running: {by_hand}"


def _check_cluster_alive(aws: Aws, cluster_id: str, step_id: str, status: StepStatus) -> None:
    cluster = aws.call("emr", "describe_cluster", ClusterId=cluster_id)["Cluster"]["Status"]
    if cluster.get("State") not in GONE:
        return
    again = step_status(aws, cluster_id, step_id)  # EMR may have settled the step meanwhile
    if again.state == COMPLETED or again.state in FAILURES:
        return
    change = cluster.get("StateChangeReason") or {}
    reason = change.get("Message") or change.get("Code") or "no reason given"
    raise ClusterTerminated(
        f"cluster {cluster_id} is {cluster['State']} ({reason}) while step {step_id} was {status.state}: "
        "the step did not finish"
    )


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `2h`, `1h30m` or a bare number of seconds -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    match = _DURATION.fullmatch(text)
    if not text or not match or not any(match.groups()):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h, 1h30m)")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def format_duration(seconds: float) -> str:
    """Seconds -> `1h02m03s` / `2m05s` / `7s`."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


# --- logs ---------------------------------------------------------------------------------------

STREAMS = ("stderr", "stdout", "controller", "syslog")
"""The step's own logs: `<LogUri>/<cluster-id>/steps/<step-id>/<stream>.gz`."""
DRIVER_STREAMS = ("driver-stderr", "driver-stdout")
"""The driver's container logs (cluster deploy mode: the YARN application master, container ..._01_000001)."""
FAILURE_LOG = "failure-log"
"""The file describe_step names in FailureDetails.LogFile."""
LOG_ORDER = ("controller", "syslog", "stdout", "stderr", FAILURE_LOG, "driver-stdout", "driver-stderr")
"""Display order: the driver's stderr (where a cluster-mode traceback is) comes last, nearest the prompt."""
NOT_YET = "(EMR copies step logs to S3 every ~5 minutes)"

_APPLICATION = re.compile(r"application_(\d+)_(\d+)")
_DRIVER_CONTAINER = re.compile(r"container_(?:e\d+_)?\d+_\d+_(\d+)_0*1")


@dataclass(frozen=True)
class LogLocation:
    """Where EMR copies a step's logs: `<LogUri>/<cluster-id>/steps/<step-id>/`, containers beside them."""

    bucket: str
    prefix: str
    cluster_prefix: str = ""

    def key(self, stream: str) -> str:
        return f"{self.prefix}{stream}.gz"

    def uri(self, stream: str) -> str:
        return f"s3://{self.bucket}/{self.key(stream)}"

    @property
    def containers_prefix(self) -> str:
        """`<LogUri>/<cluster-id>/containers/`: one folder per YARN application."""
        return f"{self.cluster_prefix}containers/"

    def prefix_uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


def log_location(aws: Aws, cluster_id: str, step_id: str) -> LogLocation:
    """Read the cluster's LogUri (EMR reports it as s3n://); LogsNotAvailable if it has none."""
    cluster: dict[str, Any] = aws.call("emr", "describe_cluster", ClusterId=cluster_id)["Cluster"]
    log_uri = cluster.get("LogUri")
    if not log_uri:
        raise LogsNotAvailable(f"cluster {cluster_id} has no LogUri: its step logs are not copied to S3")
    parts = s3uri.split(log_uri)
    if not parts:
        raise LogsNotAvailable(f"cluster {cluster_id} logs to {log_uri}, which is not an S3 URI")
    bucket, path = parts.bucket, parts.key
    base = f"{path.rstrip('/')}/" if path.strip("/") else ""
    return LogLocation(
        bucket=bucket, prefix=f"{base}{cluster_id}/steps/{step_id}/", cluster_prefix=f"{base}{cluster_id}/"
    )


def read_log(aws: Aws, location: LogLocation, stream: str) -> str:
    """The decompressed log; LogsNotAvailable while EMR has not copied it yet (it does so every few minutes)."""
    found = _read_gz(aws, location.bucket, location.key(stream))
    if found is None:
        raise LogsNotAvailable(f"{location.uri(stream)} is not there yet {NOT_YET}; try again later")
    return found[0]


def _read_gz(aws: Aws, bucket: str, key: str) -> str | None:
    """The text of a gzipped log, None if there is no such key."""
    data = aws.read_object(bucket, key)
    if data is None:
        return None
    # A decompressor object, not gzip.decompress: a log cut short still yields what it holds.
    try:
        text = zlib.decompressobj(wbits=31).decompress(data)
    except zlib.error as err:
        raise LogsNotAvailable(f"s3://{bucket}/{key} is not a readable gzip file ({err})") from None
    return text.decode("utf-8", errors="replace")


def tail(text: str, lines: int) -> str:
    """The last `lines` lines of `text`."""
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


def yarn_application(text: str) -> str | None:
    """The YARN application id spark-submit printed (`Submitted application application_...`)."""
    found = _APPLICATION.findall(text)
    return f"application_{found[-1][0]}_{found[-1][1]}" if found else None


@dataclass(frozen=True)
class FoundLog:
    """One log file that is in S3: its name (a STREAMS/DRIVER_STREAMS/FAILURE_LOG name), URI and text."""

    name: str
    uri: str
    text: str


@dataclass
class StepLogs:
    """What one look at S3 found for a step, and where it looked for what it did not find."""

    location: LogLocation
    found: dict[str, FoundLog] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    """name -> the URI (object or folder) that is not there yet."""
    application: str | None = None
    application_named: bool = False
    """True when the step's own logs name the application; False when it was guessed (or not found)."""
    notes: list[str] = field(default_factory=list)
    waited: float = 0.0
    """Seconds spent waiting for EMR to copy the logs."""

    @property
    def step_logs_found(self) -> bool:
        return any(name in self.found for name in STREAMS)

    @property
    def application_uri(self) -> str | None:
        if not self.application:
            return None
        return self.location.prefix_uri(f"{self.location.containers_prefix}{self.application}/")

    def ordered(self) -> list[FoundLog]:
        return [self.found[name] for name in LOG_ORDER if name in self.found]

    def settled(self, name: str) -> bool:
        """Found, or nothing to wait for: no driver container when the step's logs name no application."""
        if name in self.found:
            return True
        return name in DRIVER_STREAMS and self.step_logs_found and not self.application_named


def find_step_logs(
    aws: Aws,
    location: LogLocation,
    names: Sequence[str],
    *,
    log_file: str | None = None,
    started: datetime | None = None,
) -> StepLogs:
    """One look at S3 for the logs in `names` (STREAMS, DRIVER_STREAMS, FAILURE_LOG).

    The driver container belongs to the application the step's stderr/syslog/controller names
    (spark-submit prints `Submitted application application_...`); if they name none, the newest
    application under `containers/` whose driver log was written after the step started (a guess, noted).
    """
    result = StepLogs(location)
    want_driver = any(name in DRIVER_STREAMS for name in names)
    texts: dict[str, str] = {}
    for stream in STREAMS:
        if stream not in names and not (want_driver and stream != "stdout"):
            continue
        text = _read_or_note(aws, location.bucket, location.key(stream), result)
        if text is None:
            if stream in names:
                result.missing[stream] = location.uri(stream)
            continue
        texts[stream] = text
        if stream in names:
            result.found[stream] = FoundLog(stream, location.uri(stream), text)
    if want_driver:
        _find_driver(aws, location, names, texts, started, result)
    if FAILURE_LOG in names and log_file:
        _find_failure_log(aws, log_file, result)
    return result


def _read_or_note(aws: Aws, bucket: str, key: str, result: StepLogs) -> str | None:
    try:
        return _read_gz(aws, bucket, key)
    except LogsNotAvailable as err:
        result.notes.append(str(err))
        return None


def _find_driver(
    aws: Aws,
    location: LogLocation,
    names: Sequence[str],
    texts: dict[str, str],
    started: datetime | None,
    result: StepLogs,
) -> None:
    for stream in ("stderr", "syslog", "controller"):
        app = yarn_application(texts.get(stream, ""))
        if app:
            result.application, result.application_named = app, True
            break
    container = None
    if result.application:
        container = _driver_container(aws, location, result.application)
    else:
        result.application, container = _newest_application(aws, location, started)
        if result.application:
            since = " written since the step started" if started else ""
            why = "the step's logs name no YARN application" if result.step_logs_found else "no step log yet"
            result.notes.append(
                f"{why}: driver log taken from the newest application under "
                f"{location.prefix_uri(location.containers_prefix)}{since} ({result.application}); "
                "check it belongs to this step"
            )
    for name in (n for n in DRIVER_STREAMS if n in names):
        stream = name.removeprefix("driver-")
        if not container:
            where = result.application_uri or location.prefix_uri(location.containers_prefix)
            result.missing[name] = where
            continue
        key = f"{container}{stream}.gz"
        text = _read_or_note(aws, location.bucket, key, result)
        if text is None:
            result.missing[name] = location.prefix_uri(key)
        else:
            result.found[name] = FoundLog(name, location.prefix_uri(key), text)


def _folders(aws: Aws, bucket: str, prefix: str) -> list[str]:
    """The `folder/` names directly under `prefix`."""
    pages = aws.paginate("s3", "list_objects_v2", Bucket=bucket, Prefix=prefix, Delimiter="/")
    return [p["Prefix"][len(prefix) :].rstrip("/") for page in pages for p in page.get("CommonPrefixes", [])]


def _driver_container(aws: Aws, location: LogLocation, application: str) -> str | None:
    """Key prefix of the application master's container (`container_..._<attempt>_000001/`), last attempt."""
    prefix = f"{location.containers_prefix}{application}/"
    masters = []
    for name in _folders(aws, location.bucket, prefix):
        match = _DRIVER_CONTAINER.fullmatch(name)
        if match:
            masters.append((int(match.group(1)), name))
    return f"{prefix}{max(masters)[1]}/" if masters else None


def _newest_application(
    aws: Aws, location: LogLocation, started: datetime | None, look_at: int = 5
) -> tuple[str | None, str | None]:
    """(application, driver container prefix) of the newest application whose driver stderr is newer than `started`."""
    apps = []
    for name in _folders(aws, location.bucket, location.containers_prefix):
        match = _APPLICATION.fullmatch(name)
        if match:
            apps.append(((int(match.group(1)), int(match.group(2))), name))
    for _, app in sorted(apps, reverse=True)[:look_at]:
        container = _driver_container(aws, location, app)
        if not container:
            continue
        head = aws.head_object(location.bucket, f"{container}stderr.gz")
        if head is None:
            continue
        modified = _utc(head.get("LastModified"))
        if started is None or modified is None or modified >= started:
            return app, container
    return None, None


def _find_failure_log(aws: Aws, log_file: str, result: StepLogs) -> None:
    parts = s3uri.split(log_file)
    if not parts:
        result.notes.append(f"describe_step names {log_file} as the failure's log file, which is not an S3 URI")
        return
    bucket, key = parts.bucket, parts.key
    if not key.endswith(".gz"):  # a folder: its stderr
        key = f"{key.rstrip('/')}/stderr.gz"
    uri = f"s3://{bucket}/{key}"
    if any(found.uri == uri for found in result.found.values()):
        return  # the step's stderr or the driver's, shown already
    text = _read_or_note(aws, bucket, key, result)
    if text is None:
        result.missing[FAILURE_LOG] = uri
    else:
        result.found[FAILURE_LOG] = FoundLog(FAILURE_LOG, uri, text)


def collect_step_logs(
    aws: Aws,
    location: LogLocation,
    names: Sequence[str],
    *,
    required: Sequence[str],
    log_file: str | None = None,
    started: datetime | None = None,
    ended: datetime | None = None,
    wait: float = DEFAULT_LOG_WAIT_SECONDS,
    clock: Clock | None = None,
    on_progress: Callable[[str], None] | None = None,
    now: Callable[[], datetime] | None = None,
) -> StepLogs:
    """Look for the logs until every `required` one is settled, or `wait` seconds after the step ended.

    EMR's log pusher copies step and container logs to S3 about every 5 minutes, so the logs of a
    step that just ended are often not there yet. A step that ended longer ago than `wait` gets one look.
    """
    clock = clock or SystemClock()
    required = [name for name in required if name != FAILURE_LOG or log_file]  # no LogFile: nothing to wait for
    budget = wait
    if ended is not None and wait > 0:
        since = ((now or _utc_now)() - ended).total_seconds()
        budget = min(wait, max(0.0, wait - since))
    start = clock.now()
    while True:
        found = find_step_logs(aws, location, names, log_file=log_file, started=started)
        pending = [name for name in required if not found.settled(name)]
        elapsed = clock.now() - start
        if not pending or elapsed >= budget:
            found.waited = elapsed
            return found
        if on_progress:
            looking = found.missing.get(pending[0]) or location.uri("stderr")
            on_progress(
                f"waiting for EMR to copy the logs to S3 (about every 5 minutes): {looking} not there yet "
                f"({format_duration(elapsed)} of {format_duration(budget)})"
            )
        clock.sleep(min(LOG_POLL_SECONDS, budget - elapsed))


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def failure_report(found: StepLogs, lines: int) -> list[str]:
    """Lines for stderr after a failed step: the tails of the step's stderr, the failure log and the driver's
    stderr and stdout, what is still missing, and where the container logs are. Every location is a full
    s3:// URI.

    The driver's stdout matters: Spark's PythonRunner merges the Python driver's stderr into its stdout
    (``redirectErrorStream``), so the job's own one-line error and traceback land in the driver
    container's ``stdout.gz``, while ``stderr.gz`` holds the JVM's log (seen in the EMR emulation's
    client mode; the same code runs the driver in cluster mode).
    """
    out: list[str] = []
    for name in ("stderr", FAILURE_LOG, "driver-stderr", "driver-stdout"):
        log = found.found.get(name)
        if log:
            out += [f"--- last {lines} lines of {log.uri} ---", tail(log.text, lines)]
    took = f"; waited {format_duration(found.waited)}" if found.waited > 0 else ""
    if "stderr" not in found.found and "stderr" in found.missing:
        out.append(f"(no step log yet: {found.missing['stderr']} is not there yet {NOT_YET}{took})")
    if "driver-stderr" not in found.found:
        if found.application_named:
            out.append(f"(driver log not there yet: {found.missing['driver-stderr']}{took})")
        elif found.step_logs_found:
            out.append("(the step's logs name no YARN application, so there is no driver container log)")
    if FAILURE_LOG in found.missing:
        out.append(f"(describe_step's FailureDetails.LogFile {found.missing[FAILURE_LOG]} is not there yet{took})")
    out += [f"({note})" for note in found.notes]
    if found.application_uri:
        out.append(f"driver and executor logs: {found.application_uri}")
    return out
