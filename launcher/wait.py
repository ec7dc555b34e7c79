"""Follow a step to its end, and fetch its logs from the cluster's LogUri.

A plain poll loop instead of boto3's `step_complete` waiter, which gives up after 30 minutes
(60 polls x 30 s): a featurization run can take hours, and the deadline here is the user's
`--timeout`, or none. The clock is injected so tests run the loop without sleeping.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from launcher.aws import Aws
from launcher.errors import AwsServiceError, ClusterTerminated, LogsNotAvailable, StepNotFound, WaitTimeout
from launcher.submit import GONE

SUCCESS = "COMPLETED"
FAILURES = ("FAILED", "CANCELLED", "INTERRUPTED")
DEFAULT_POLL_SECONDS = 15.0


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


@dataclass(frozen=True)
class Outcome:
    """How a step ended, and how long we watched it."""

    cluster_id: str
    step_id: str
    state: str
    elapsed: float
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == SUCCESS


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
    return StepStatus(state=status["State"], reason=reason, log_file=failure.get("LogFile"))


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
) -> Outcome:
    """Poll until the step ends; raise WaitTimeout after `timeout` s, ClusterTerminated if the cluster goes.

    AWS errors that survived botocore's retries are tolerated `max_consecutive_errors - 1` times
    in a row (a throttled poll should not end a two-hour watch), then raised.
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
            if status.state == SUCCESS or status.state in FAILURES:
                return Outcome(cluster_id, step_id, status.state, elapsed, status.reason)
            _check_cluster_alive(aws, cluster_id, step_id, status)
        elapsed = clock.now() - start
        if timeout is not None and elapsed >= timeout:
            raise WaitTimeout(
                f"step {step_id} still {last_state} after "
                f"{format_duration(elapsed)}; it keeps running: `featurizer wait {step_id} "
                f"--cluster-id {cluster_id}` to follow it again"
            )
        clock.sleep(poll if timeout is None else max(0.0, min(poll, timeout - elapsed)))


def _check_cluster_alive(aws: Aws, cluster_id: str, step_id: str, status: StepStatus) -> None:
    cluster = aws.call("emr", "describe_cluster", ClusterId=cluster_id)["Cluster"]["Status"]
    if cluster.get("State") not in GONE:
        return
    again = step_status(aws, cluster_id, step_id)  # EMR may have settled the step meanwhile
    if again.state == SUCCESS or again.state in FAILURES:
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


# --- logs -------------------------------------------------------------------------------------

STREAMS = ("stderr", "stdout", "controller", "syslog")


@dataclass(frozen=True)
class LogLocation:
    """Where EMR copies a step's logs: `<LogUri>/<cluster-id>/steps/<step-id>/`."""

    bucket: str
    prefix: str

    def key(self, stream: str) -> str:
        return f"{self.prefix}{stream}.gz"

    def uri(self, stream: str) -> str:
        return f"s3://{self.bucket}/{self.key(stream)}"


def log_location(aws: Aws, cluster_id: str, step_id: str) -> LogLocation:
    """Read the cluster's LogUri (EMR reports it as s3n://); LogsNotAvailable if it has none."""
    cluster: dict[str, Any] = aws.call("emr", "describe_cluster", ClusterId=cluster_id)["Cluster"]
    log_uri = cluster.get("LogUri")
    if not log_uri:
        raise LogsNotAvailable(f"cluster {cluster_id} has no LogUri: its step logs are not copied to S3")
    match = re.fullmatch(r"s3[an]?://([^/]+)/?(.*)", log_uri)
    if not match:
        raise LogsNotAvailable(f"cluster {cluster_id} logs to {log_uri}, which is not an S3 URI")
    bucket, path = match.groups()
    base = f"{path.rstrip('/')}/" if path.strip("/") else ""
    return LogLocation(bucket=bucket, prefix=f"{base}{cluster_id}/steps/{step_id}/")


def read_log(aws: Aws, location: LogLocation, stream: str) -> str:
    """The decompressed log; LogsNotAvailable while EMR has not copied it yet (it does so every few minutes)."""
    data = aws.read_object(location.bucket, location.key(stream))
    if data is None:
        raise LogsNotAvailable(
            f"{location.uri(stream)} is not there yet (EMR copies step logs to S3 every ~5 minutes); try again later"
        )
    # A decompressor object, not gzip.decompress: a log cut short still yields what it holds.
    try:
        text = zlib.decompressobj(wbits=31).decompress(data)
    except zlib.error as err:
        raise LogsNotAvailable(f"{location.uri(stream)} is not a readable gzip file ({err})") from None
    return text.decode("utf-8", errors="replace")


def tail(text: str, lines: int) -> str:
    """The last `lines` lines of `text`."""
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


def yarn_application(text: str) -> str | None:
    """The YARN application id spark-submit printed, to point at the container logs."""
    found = re.findall(r"application_\d+_\d+", text)
    return found[-1] if found else None
