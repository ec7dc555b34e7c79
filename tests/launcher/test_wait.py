"""wait and logs: outcomes and exit codes, no 30-minute cap, failure reasons and log tails."""

from __future__ import annotations

import gzip
import io

import pytest

from launcher.cli import State, _StatusLine
from launcher.wait import StepStatus, format_duration, parse_duration

from .conftest import LOGS_BUCKET, STACK, FakeClock, Faults, Project, error_line, invoke, make_cluster


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
    assert "containers/application_1700000000000_0007/" in err
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
    result = invoke("logs", step_id, "--cluster-id", project.cluster_id)
    assert result.exit_code == 1
    assert "stdout.gz is not there yet" in error_line(result)
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
    line = _StatusLine(stream, "s-1")
    for state, elapsed in (("PENDING", 0.0), ("RUNNING", 15.0), ("RUNNING", 30.0)):
        line.update(StepStatus(state), elapsed)
    line.close()
    out = stream.getvalue()
    assert out.count("\r") == 3 and out.endswith("\n") and out.count("\n") == 1
    assert out.split("\r")[-1].split() == ["s-1", "RUNNING", "30s\x1b[K"]
