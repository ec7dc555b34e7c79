"""wait and logs: outcomes and exit codes, no 30-minute cap, failure reasons and log tails."""

from __future__ import annotations

import gzip
import io
from datetime import datetime, timedelta, timezone
from typing import Any

import botocore.client
import pytest
from botocore.exceptions import ClientError

from launcher.cli import State
from launcher.terminal import StatusLine
from launcher.wait import StepStatus, format_duration, parse_duration

from .conftest import LOGS_BUCKET, STACK, FakeClock, Faults, Project, error_line, invoke, make_cluster


@pytest.fixture(autouse=True)
def _no_real_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every wait here runs on a FakeClock: a real sleep (minutes of log waiting) is a test bug."""

    def refuse(self: Any, seconds: float) -> None:
        raise AssertionError(f"real sleep of {seconds}s: pass State(clock=FakeClock())")

    monkeypatch.setattr("launcher.wait.SystemClock.sleep", refuse)


def _wait(project: Project, step_id: str, clock: FakeClock, *extra: str):  # type: ignore[no-untyped-def]
    return invoke("wait", step_id, "--cluster-id", project.cluster_id, "--poll", "30s", *extra, obj=State(clock=clock))


def _finish(project: Project, step_id: str, after: int, state: str, reason: str | None = None) -> FakeClock:
    """A clock that moves the step to `state` after `after` sleeps (moto never does)."""

    def on_sleep(count: int) -> None:
        if count == after:
            step = project.step(step_id)
            step.state = state
            if reason:
                step.last_state_change_reason = reason

    return FakeClock(on_sleep=on_sleep)


def test_completed_after_three_hours_exit_0_no_30_minute_cap(project: Project) -> None:
    step_id = project.add_step()
    clock = _finish(project, step_id, after=360, state="COMPLETED")  # 360 polls x 30 s = 3 h
    result = _wait(project, step_id, clock)
    assert result.exit_code == 0, result.stderr
    assert clock.t == 3 * 3600
    assert set(clock.sleeps) == {30.0}
    lines = result.stderr.splitlines()
    assert lines[0].split()[:2] == [step_id, "RUNNING"]  # a progress line per state change on a pipe
    assert lines[1].split() == [step_id, "COMPLETED", "3h00m00s"]
    assert lines[-1] == f"step {step_id} COMPLETED after 3h00m00s"


def test_failed_prints_reason_and_stderr_tail_exit_1(project: Project) -> None:
    step_id = project.add_step()
    stderr = "\n".join(f"line {i}" for i in range(100)) + "\nINFO Client: application_1700000000000_0007 failed"
    project.put_log(step_id, "stderr", stderr)
    result = _wait(
        project, step_id, _finish(project, step_id, 2, "FAILED", "Step failed with exitCode 1"), "--tail", "5"
    )
    assert result.exit_code == 1
    err = result.stderr
    assert f"step {step_id} FAILED after 1m00s: Step failed with exitCode 1" in err
    assert f"s3://{LOGS_BUCKET}/emr/{project.cluster_id}/steps/{step_id}/stderr.gz" in err
    assert "line 96" in err and "line 95" not in err
    hint = f"driver and executor logs: s3://{LOGS_BUCKET}/emr/{project.cluster_id}/containers/application_1700000000000_0007/"
    assert hint in err.splitlines()
    _assert_usable_uris(err)
    assert "Traceback" not in err


def test_cancelled_exit_1(project: Project) -> None:
    step_id = project.add_step()
    result = _wait(project, step_id, _finish(project, step_id, 1, "CANCELLED", "Cancelled by user"))
    assert result.exit_code == 1
    assert f"step {step_id} CANCELLED after 30s: Cancelled by user" in result.stderr


def test_failed_before_logs_are_written(project: Project) -> None:
    step_id = project.add_step()
    result = _wait(project, step_id, _finish(project, step_id, 1, "FAILED"))
    assert result.exit_code == 1
    assert "FAILED after 30s: no reason given" in result.stderr
    assert "is not there yet (EMR copies step logs to S3 every ~5 minutes)" in result.stderr


def test_failed_on_a_cluster_without_log_uri(project: Project) -> None:
    project.cluster_id = make_cluster(project.session, log_uri=None)
    step_id = project.add_step()
    result = _wait(project, step_id, _finish(project, step_id, 1, "FAILED"))
    assert result.exit_code == 1
    assert "has no LogUri" in result.stderr


def test_timeout_exit_3_and_the_step_keeps_running(project: Project) -> None:
    step_id = project.add_step()
    clock = FakeClock()
    result = _wait(project, step_id, clock, "--timeout", "2m")
    assert result.exit_code == 3
    assert f"step {step_id} still RUNNING after 2m00s" in error_line(result)
    assert clock.t == 120
    assert project.step(step_id).state == "RUNNING"


def test_cluster_terminating_while_waiting_exit_1(project: Project) -> None:
    step_id = project.add_step()

    def on_sleep(count: int) -> None:
        if count == 3:
            project.cluster().terminate()
            project.cluster().last_state_change_reason = "Terminated by user request"

    result = _wait(project, step_id, FakeClock(on_sleep=on_sleep))
    assert result.exit_code == 1
    line = error_line(result)
    assert f"cluster {project.cluster_id} is TERMINATED (Terminated by user request) while step {step_id}" in line


def test_a_finished_step_on_a_terminated_cluster_is_still_reported(project: Project) -> None:
    step_id = project.add_step()
    project.step(step_id).state = "COMPLETED"
    project.cluster().terminate()
    result = _wait(project, step_id, FakeClock())
    assert result.exit_code == 0


def test_unknown_step_and_cluster_exit_2(project: Project) -> None:
    result = _wait(project, "s-NOSUCHSTEP", FakeClock())
    assert result.exit_code == 2
    assert "step s-NOSUCHSTEP not found" in error_line(result)
    result = invoke("wait", "s-1", "--cluster-id", "j-NOSUCH", obj=State(clock=FakeClock()))
    assert result.exit_code == 2
    assert "cluster j-NOSUCH not found" in error_line(result)


def test_throttled_polls_are_tolerated_then_fatal(project: Project, faults: Faults) -> None:
    step_id = project.add_step()
    faults.fail("emr", "DescribeStep", 400, "ThrottlingException", times=2)  # one poll's 2 attempts
    result = invoke(
        "--max-attempts", "2", "wait", step_id, "--cluster-id", project.cluster_id,
        obj=State(clock=_finish(project, step_id, 2, "COMPLETED")),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "poll failed, will retry" in result.stderr
    faults.fail("emr", "DescribeStep", 400, "ThrottlingException")
    result = invoke(
        "--max-attempts", "2", "wait", step_id, "--cluster-id", project.cluster_id, obj=State(clock=FakeClock())
    )
    assert result.exit_code == 1
    assert "kept failing after 2 attempt(s): ThrottlingException" in result.stderr.splitlines()[-1]


def test_submit_wait_follows_the_new_step(project: Project) -> None:
    clock = FakeClock()

    def on_sleep(count: int) -> None:
        cluster = project.cluster()
        cluster.steps[-1].state = "COMPLETED"

    clock.on_sleep = on_sleep
    result = invoke(
        "submit", "--stack", STACK, "--input", "s3://proj-bucket/raw/fruits", "--output", "s3://proj-bucket/results/out",
        "--wait", "--timeout", "2h", obj=State(clock=clock),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    step_id = result.stdout.splitlines()[0]
    assert f"step {step_id} COMPLETED after 15s" in result.stderr


def test_logs_prints_both_streams_and_tails(project: Project) -> None:
    step_id = project.add_step()
    project.put_log(step_id, "stdout", "hello from the driver\n")
    project.put_log(step_id, "stderr", "a\nb\nc\n")
    result = invoke("logs", step_id, "--stack", STACK)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"==> s3://{LOGS_BUCKET}/emr/{project.cluster_id}/steps/{step_id}/stdout.gz <==",
        "hello from the driver",
        f"==> s3://{LOGS_BUCKET}/emr/{project.cluster_id}/steps/{step_id}/stderr.gz <==",
        "a",
        "b",
        "c",
    ]
    tail = invoke("logs", step_id, "--cluster-id", project.cluster_id, "--stream", "stderr", "--tail", "1")
    assert tail.stdout == "c\n"


def test_logs_truncated_gzip_still_shows_what_it_holds(project: Project) -> None:
    step_id = project.add_step()
    data = gzip.compress(("x" * 50 + "\n").encode() * 2000)
    key = f"emr/{project.cluster_id}/steps/{step_id}/stderr.gz"
    project.session.client("s3").put_object(Bucket=LOGS_BUCKET, Key=key, Body=data[: len(data) // 2])
    result = invoke("logs", step_id, "--cluster-id", project.cluster_id, "--stream", "stderr")
    assert result.exit_code == 0
    assert result.stdout.startswith("x" * 50 + "\n")


def test_logs_not_written_or_no_log_uri_exit_1(project: Project) -> None:
    step_id = project.add_step()
    clock = FakeClock()
    result = invoke("logs", step_id, "--cluster-id", project.cluster_id, obj=State(clock=clock))
    assert result.exit_code == 1
    line = error_line(result)
    assert f"s3://{LOGS_BUCKET}/emr/{project.cluster_id}/steps/{step_id}/stderr.gz is not there yet" in line
    assert clock.sleeps == []  # a RUNNING step's logs come later: no waiting for them
    project.cluster_id = make_cluster(project.session, log_uri=None)
    result = invoke("logs", project.add_step(), "--cluster-id", project.cluster_id)
    assert result.exit_code == 1
    assert "has no LogUri" in error_line(result)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("45", 45), ("2.5", 2.5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2d", "h", "-5s", "1m2h"])
def test_bad_durations_are_usage_errors(text: str, fake_credentials: None) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
    result = invoke("wait", "s-1", "--cluster-id", "j-1", "--timeout", text or " ")
    assert result.exit_code == 2


def test_format_duration() -> None:
    assert [format_duration(s) for s in (7, 125, 3723)] == ["7s", "2m05s", "1h02m03s"]


def test_poll_faster_than_once_a_second_is_refused(fake_credentials: None) -> None:
    result = invoke("wait", "s-1", "--cluster-id", "j-1", "--poll", "0s")
    assert result.exit_code == 2
    assert "poll at most once a second" in result.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_rewrites_itself_on_a_terminal() -> None:
    stream = _Terminal()
    line = StatusLine(stream, "s-1")
    for state, elapsed in (("PENDING", 0.0), ("RUNNING", 15.0), ("RUNNING", 30.0)):
        line.update(StepStatus(state), elapsed)
    line.close()
    out = stream.getvalue()
    assert out.count("\r") == 3 and out.endswith("\n") and out.count("\n") == 1
    assert out.split("\r")[-1].split() == ["s-1", "RUNNING", "30s\x1b[K"]


# --- driver logs (cluster deploy mode), waiting for the log push, cancel on timeout ----------------

APP = "application_1700000000000_0007"
DRIVER = "container_e05_1700000000000_0007_01_000001"
TRACEBACK = 'Traceback (most recent call last):\n  File "entry.py", line 3\nValueError: no images under s3://in/'


def _put(project: Project, key: str, text: str) -> None:
    project.session.client("s3").put_object(Bucket=LOGS_BUCKET, Key=key, Body=gzip.compress(text.encode()))


def _put_container(project: Project, app: str, container: str, stream: str, text: str) -> str:
    """A container log under EMR's layout; returns its URI."""
    key = f"emr/{project.cluster_id}/containers/{app}/{container}/{stream}.gz"
    _put(project, key, text)
    return f"s3://{LOGS_BUCKET}/{key}"


def _cluster_mode_logs(project: Project, step_id: str) -> str:
    """What a cluster-mode spark-submit leaves: the step's stderr names the app, the driver has the traceback."""
    project.put_log(
        step_id, "stderr", f"INFO Client: Submitted application {APP}\nException: {APP} finished with failed status"
    )
    _put_container(
        project, APP, DRIVER.replace("_01_", "_02_").replace("_000001", "_000003"), "stderr", "executor noise"
    )
    _put_container(
        project, "application_1700000000000_0006", "container_1700000000000_0006_01_000001", "stderr", "old app"
    )
    return _put_container(project, APP, DRIVER, "stderr", "INFO driver starting\n" + TRACEBACK)


def _assert_usable_uris(text: str) -> None:
    """Every location printed is a whole s3:// URI: no ellipsis, no placeholder, no bare bucket/… path."""
    assert "…" not in text and "/.../" not in text and "<" not in text, text
    assert "s3n://" not in text
    for line in text.splitlines():
        if LOGS_BUCKET in line:
            assert f"s3://{LOGS_BUCKET}/" in line, line


def test_cluster_mode_failure_prints_the_driver_traceback(project: Project) -> None:
    step_id = project.add_step()
    driver_uri = _cluster_mode_logs(project, step_id)
    clock = _finish(project, step_id, 1, "FAILED", "Step failed")
    result = _wait(project, step_id, clock, "--tail", "3")
    assert result.exit_code == 1
    err = result.stderr
    lines = err.splitlines()
    assert f"--- last 3 lines of {driver_uri} ---" in lines
    assert lines[lines.index(f"--- last 3 lines of {driver_uri} ---") + 1 :][:3] == TRACEBACK.splitlines()[-3:]
    assert "old app" not in err and "executor noise" not in err
    assert f"--- last 3 lines of s3://{LOGS_BUCKET}/emr/{project.cluster_id}/steps/{step_id}/stderr.gz ---" in lines
    assert "waiting for EMR" not in err and clock.t == 30  # everything was there: no waiting
    _assert_usable_uris(err)


def test_the_python_drivers_own_error_line_is_shown_from_the_driver_stdout(project: Project) -> None:
    # PySpark's PythonRunner merges the Python driver's stderr into stdout: the job's one-line reason
    # is in the driver container's stdout.gz, the JVM's log in its stderr.gz.
    step_id = project.add_step()
    _cluster_mode_logs(project, step_id)
    reason = "featurizer: run failed: only 1 of 40 images could be featurized; PCA needs 2"
    stdout_uri = _put_container(project, APP, DRIVER, "stdout", TRACEBACK + "\n" + reason)
    clock = _finish(project, step_id, 1, "FAILED", "Step failed")
    result = _wait(project, step_id, clock, "--tail", "2")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert f"--- last 2 lines of {stdout_uri} ---" in lines
    assert lines[lines.index(f"--- last 2 lines of {stdout_uri} ---") + 2] == reason


def test_failure_waits_for_the_log_push_with_progress(project: Project) -> None:
    step_id = project.add_step()

    def on_sleep(count: int) -> None:
        if count == 1:
            project.step(step_id).state = "FAILED"
        if count == 4:  # three log polls later (90 s): the step's stderr arrives, the driver's not yet
            project.put_log(step_id, "stderr", f"Submitted application {APP}")
        if count == 9:  # EMR's next push
            _put_container(project, APP, DRIVER, "stderr", TRACEBACK)

    clock = FakeClock(on_sleep=on_sleep)
    result = _wait(project, step_id, clock)
    assert result.exit_code == 1
    err = result.stderr
    progress = [line for line in err.splitlines() if line.startswith("waiting for EMR to copy the logs to S3")]
    assert len(progress) == 8
    steps = f"s3://{LOGS_BUCKET}/emr/{project.cluster_id}/steps/{step_id}/stderr.gz"
    containers = f"s3://{LOGS_BUCKET}/emr/{project.cluster_id}/containers/{APP}/"
    assert f"{steps} not there yet (0s of 6m00s)" in progress[0]
    assert f"{containers} not there yet (1m30s of 6m00s)" in progress[3]
    assert "ValueError: no images under s3://in/" in err
    assert clock.t == 30 + 8 * 30
    _assert_usable_uris(err)


def test_log_wait_is_configurable_and_gives_up(project: Project) -> None:
    step_id = project.add_step()
    clock = _finish(project, step_id, 1, "FAILED")
    result = _wait(project, step_id, clock, "--log-wait", "2m")
    assert result.exit_code == 1
    assert clock.t == 30 + 120
    assert "stderr.gz is not there yet (EMR copies step logs to S3 every ~5 minutes); waited 2m00s)" in result.stderr
    _assert_usable_uris(result.stderr)
    clock = _finish(project, step_id := project.add_step(), 1, "FAILED")
    assert _wait(project, step_id, clock, "--log-wait", "0").exit_code == 1
    assert clock.t == 30


def test_no_waiting_for_logs_of_a_step_that_ended_long_ago(project: Project) -> None:
    step_id = project.add_step()
    step = project.step(step_id)
    step.state = "FAILED"
    step.end_date_time = datetime.now(timezone.utc) - timedelta(hours=1)
    clock = FakeClock()
    result = _wait(project, step_id, clock)
    assert result.exit_code == 1
    assert clock.sleeps == []


def test_driver_found_through_syslog_when_stderr_names_no_application(project: Project) -> None:
    step_id = project.add_step()
    project.put_log(step_id, "stderr", "Exception in thread main")
    project.put_log(step_id, "syslog", f"INFO YarnClientImpl: Submitted application {APP}")
    _put_container(project, APP, DRIVER, "stderr", TRACEBACK)
    result = _wait(project, step_id, _finish(project, step_id, 1, "FAILED"))
    assert "ValueError: no images under s3://in/" in result.stderr


def test_newest_application_is_a_labelled_guess_when_the_step_logs_name_none(project: Project) -> None:
    step_id = project.add_step()
    step = project.step(step_id)
    step.start_date_time = datetime.now(timezone.utc) - timedelta(minutes=10)
    project.put_log(step_id, "stderr", "spark-submit said nothing useful")
    _put_container(project, "application_1700000000000_0006", "container_1700000000000_0006_01_000001", "stderr", "6")
    _put_container(project, APP, DRIVER, "stderr", TRACEBACK)
    result = _wait(project, step_id, _finish(project, step_id, 1, "FAILED"))
    err = result.stderr
    assert "ValueError: no images" in err
    assert f"newest application under s3://{LOGS_BUCKET}/emr/{project.cluster_id}/containers/ written since" in err
    _assert_usable_uris(err)
    # an application older than the step is not taken for its driver
    step_id = project.add_step()
    project.step(step_id).start_date_time = datetime.now(timezone.utc) + timedelta(minutes=10)
    project.put_log(step_id, "stderr", "spark-submit said nothing useful")
    result = _wait(project, step_id, _finish(project, step_id, 1, "FAILED"))
    assert "ValueError" not in result.stderr
    assert "the step's logs name no YARN application, so there is no driver container log" in result.stderr


@pytest.fixture
def emr_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Patch botocore's `_make_api_call` for what moto lacks (CancelSteps, FailureDetails); record requests.

    `answers[operation]`: a dict returned instead of calling moto, an exception raised, or for
    DescribeStep a dict merged into moto's `Step.Status`.
    """
    real = botocore.client.BaseClient._make_api_call
    state: dict[str, Any] = {"requests": [], "answers": {}}

    def fake(self: Any, operation: str, params: dict[str, Any]) -> Any:
        answer = state["answers"].get(operation)
        if operation == "CancelSteps":
            state["requests"].append(params)
            if isinstance(answer, Exception):
                raise answer
            return answer
        result = real(self, operation, params)
        if operation == "DescribeStep" and answer:
            result["Step"]["Status"].update(answer)
        return result

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", fake)
    return state


def test_timeout_with_cancel_cancels_the_step_exit_3(project: Project, emr_calls: dict[str, Any]) -> None:
    step_id = project.add_step()
    emr_calls["answers"]["CancelSteps"] = {"CancelStepsInfoList": [{"StepId": step_id, "Status": "SUBMITTED"}]}
    result = _wait(project, step_id, FakeClock(), "--timeout", "1m", "--cancel")
    assert result.exit_code == 3
    assert emr_calls["requests"] == [
        {"ClusterId": project.cluster_id, "StepIds": [step_id], "StepCancellationOption": "SEND_INTERRUPT"}
    ]
    line = error_line(result)
    assert f"step {step_id} still RUNNING after 1m00s; cancellation requested (SEND_INTERRUPT): EMR accepted it" in line


def test_cancel_refused_or_denied_is_reported_exit_3(project: Project, emr_calls: dict[str, Any]) -> None:
    step_id = project.add_step()
    emr_calls["answers"]["CancelSteps"] = {
        "CancelStepsInfoList": [{"StepId": step_id, "Status": "FAILED", "Reason": "step is already COMPLETED"}]
    }
    result = _wait(project, step_id, FakeClock(), "--timeout", "1m", "--cancel")
    assert result.exit_code == 3
    assert "EMR refused to cancel it (FAILED: step is already COMPLETED); it keeps running" in error_line(result)
    emr_calls["answers"]["CancelSteps"] = ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "no elasticmapreduce:CancelSteps"}}, "CancelSteps"
    )
    result = _wait(project, step_id, FakeClock(), "--timeout", "1m", "--cancel")
    assert result.exit_code == 3
    line = error_line(result)
    assert "could not cancel it (" in line and "no elasticmapreduce:CancelSteps" in line
    assert f"aws emr cancel-steps --cluster-id {project.cluster_id} --step-ids {step_id}" in line


def test_no_cancel_without_the_flag_and_cancel_needs_a_timeout(project: Project, emr_calls: dict[str, Any]) -> None:
    step_id = project.add_step()
    assert _wait(project, step_id, FakeClock(), "--timeout", "1m").exit_code == 3
    assert emr_calls["requests"] == []
    result = _wait(project, step_id, FakeClock(), "--cancel")
    assert result.exit_code == 2
    assert "--cancel needs --timeout" in result.stderr


def test_failure_details_log_file_is_read(project: Project, emr_calls: dict[str, Any]) -> None:
    step_id = project.add_step()
    project.put_log(step_id, "stderr", "no application here")
    other = f"emr/{project.cluster_id}/node/i-0abc/applications/spark/failure.log.gz"
    _put(project, other, "java.lang.OutOfMemoryError: Java heap space")
    emr_calls["answers"]["DescribeStep"] = {
        "FailureDetails": {"Reason": "Unknown error", "LogFile": f"s3n://{LOGS_BUCKET}/{other}"}
    }
    result = _wait(project, step_id, _finish(project, step_id, 1, "FAILED"))
    assert result.exit_code == 1
    assert f"--- last 40 lines of s3://{LOGS_BUCKET}/{other} ---" in result.stderr
    assert "OutOfMemoryError" in result.stderr
    _assert_usable_uris(result.stderr)


def test_logs_prints_every_stream_that_exists_driver_last(project: Project) -> None:
    step_id = project.add_step()
    for stream in ("controller", "syslog", "stdout"):
        project.put_log(step_id, stream, f"{stream} text")
    _cluster_mode_logs(project, step_id)
    driver_out = _put_container(project, APP, DRIVER, "stdout", "driver prints")
    project.step(step_id).state = "FAILED"
    result = invoke("logs", step_id, "--cluster-id", project.cluster_id, obj=State(clock=FakeClock()))
    assert result.exit_code == 0, result.stderr
    steps = f"s3://{LOGS_BUCKET}/emr/{project.cluster_id}/steps/{step_id}"
    headers = [line for line in result.stdout.splitlines() if line.startswith("==> ")]
    assert headers == [
        f"==> {steps}/controller.gz <==",
        f"==> {steps}/syslog.gz <==",
        f"==> {steps}/stdout.gz <==",
        f"==> {steps}/stderr.gz <==",
        f"==> {driver_out} <==",
        f"==> s3://{LOGS_BUCKET}/emr/{project.cluster_id}/containers/{APP}/{DRIVER}/stderr.gz <==",
    ]
    assert result.stdout.rstrip().endswith("ValueError: no images under s3://in/")
    one = invoke("logs", step_id, "--cluster-id", project.cluster_id, "--stream", "driver-stderr", "--tail", "1")
    assert one.stdout == "ValueError: no images under s3://in/\n"


def test_logs_waits_for_a_step_that_just_failed(project: Project) -> None:
    step_id = project.add_step()
    project.step(step_id).state = "FAILED"

    def on_sleep(count: int) -> None:
        if count == 2:
            _cluster_mode_logs(project, step_id)

    clock = FakeClock(on_sleep=on_sleep)
    result = invoke("logs", step_id, "--cluster-id", project.cluster_id, "--log-wait", "5m", obj=State(clock=clock))
    assert result.exit_code == 0, result.stderr
    assert clock.t == 60
    assert "waiting for EMR to copy the logs to S3" in result.stderr
    assert "ValueError: no images under s3://in/" in result.stdout
    _assert_usable_uris(result.stderr)
    missing = invoke("logs", step_id, "--cluster-id", project.cluster_id, "--stream", "failure-log")
    assert missing.exit_code == 1
    assert "names no FailureDetails.LogFile" in error_line(missing)
