"""deploy: content-addressed keys, skip-unchanged, progress, and no partial objects."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from blueprint import artifacts
from blueprint.package import build_package
from launcher import deploy as deploying
from launcher.aws import Aws
from launcher.errors import AwsServiceError

from .conftest import BUCKET, STACK, Faults, Project, invoke


def _deployed(stdout: str) -> dict[str, str]:
    """`uploaded s3://... (size)` lines -> {uri: verb}."""
    return {line.split()[1]: line.split()[0] for line in stdout.splitlines()}


def test_deploy_uploads_package_and_bootstrap_under_digest_keys(project: Project, tmp_path: Path) -> None:
    result = invoke("deploy", "--bucket", BUCKET)
    assert result.exit_code == 0, result.stderr
    built = build_package(tmp_path / "check")
    bootstrap_digest = artifacts.bootstrap_digest()
    expected = {
        f"artifacts/job/{built.digest}/job.zip",
        f"artifacts/job/{built.digest}/entrypoint.py",
        *(f"artifacts/bootstrap/{bootstrap_digest}/{name}" for name in artifacts.BOOTSTRAP_FILES),
    }
    wheels = {key for key in project.keys("artifacts/") if key.startswith("artifacts/wheelhouse/tf/")}
    assert {key.rsplit("/", 1)[1] for key in wheels} == {"manifest.json", "numpy-1.26.4-cp311-tf.whl"}
    assert set(project.keys("artifacts/")) == expected | wheels
    assert set(_deployed(result.stdout).values()) == {"uploaded"}
    s3 = project.session.client("s3")
    body = s3.get_object(Bucket=BUCKET, Key=f"artifacts/job/{built.digest}/job.zip")
    assert body["Body"].read() == built.zip_path.read_bytes()
    assert body["Metadata"]["sha256"] == hashlib.sha256(built.zip_path.read_bytes()).hexdigest()


def test_second_deploy_uploads_nothing(project: Project, faults: Faults) -> None:
    assert invoke("deploy", "--bucket", BUCKET).exit_code == 0
    puts_after_first = faults.attempts.get("s3.PutObject", 0)
    again = invoke("deploy", "--bucket", BUCKET)
    assert again.exit_code == 0
    assert set(_deployed(again.stdout).values()) == {"unchanged"}
    assert faults.attempts.get("s3.PutObject", 0) == puts_after_first > 0


def test_an_object_with_other_bytes_under_our_key_is_replaced(project: Project, tmp_path: Path) -> None:
    built = build_package(tmp_path / "check")
    key = f"artifacts/job/{built.digest}/job.zip"
    project.session.client("s3").put_object(Bucket=BUCKET, Key=key, Body=b"tampered")
    result = invoke("deploy", "--bucket", BUCKET, "--no-bootstrap")
    assert _deployed(result.stdout)[f"s3://{BUCKET}/{key}"] == "uploaded"
    assert project.session.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read() == built.zip_path.read_bytes()


def test_prefix_and_stack(project: Project) -> None:
    result = invoke("deploy", "--bucket", BUCKET, "--prefix", "/team/a", "--no-bootstrap")
    assert result.exit_code == 0
    assert [k.split("/")[:3] for k in project.keys("team/")] == [["team", "a", "job"]] * 2
    from_stack = invoke("deploy", "--stack", STACK, "--no-bootstrap")
    assert from_stack.exit_code == 0, from_stack.stderr
    assert len(project.keys("artifacts/job/")) == 2


def test_deploy_needs_a_bucket_or_stack(fake_credentials: None) -> None:
    result = invoke("deploy")
    assert result.exit_code == 2
    assert "--bucket is required" in result.stderr


def _big_file(tmp_path: Path, size: int) -> deploying.Artifact:
    path = tmp_path / "weights.h5"
    path.write_bytes(bytes(range(256)) * (size // 256))
    return deploying.Artifact(path, "artifacts/weights/abc/weights.h5")


def test_large_uploads_report_progress_to_the_total(project: Project, tmp_path: Path) -> None:
    item = _big_file(tmp_path, 11 * 1024 * 1024)
    seen: list[tuple[str, int, int]] = []

    def progress(name: str, total: int):  # type: ignore[no-untyped-def]
        return lambda count: seen.append((name, count, total))

    config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    deploying.deploy(Aws.connect(), BUCKET, [item], progress=progress, large=1024, transfer_config=config)
    assert sum(count for _, count, _ in seen) == item.path.stat().st_size
    assert {(name, total) for name, _, total in seen} == {("weights.h5", item.path.stat().st_size)}


def test_large_file_progress_on_the_command_line(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploying, "deploy", _deploy_with_small_large_threshold(deploying.deploy))
    result = invoke("deploy", "--bucket", BUCKET, "--no-bootstrap")
    assert result.exit_code == 0
    progress = [line for line in result.stderr.splitlines() if line.startswith("uploading job-")]
    assert progress and progress[-1].endswith("100%")


def _deploy_with_small_large_threshold(original):  # type: ignore[no-untyped-def]
    return lambda *args, **kwargs: original(*args, **{**kwargs, "large": 1})


@pytest.mark.parametrize(
    ("size", "failing_operation"),
    [(11 * 1024 * 1024, "UploadPart"), (1024, "PutObject")],
    ids=["multipart", "single-put"],
)
def test_interrupted_upload_leaves_no_object_under_the_key(
    project: Project, faults: Faults, tmp_path: Path, size: int, failing_operation: str
) -> None:
    item = _big_file(tmp_path, size)
    faults.fail("s3", failing_operation, 500, "InternalError", times=1000)
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    with pytest.raises(AwsServiceError, match="kept failing"):
        deploying.deploy(Aws.connect(max_attempts=2), BUCKET, [item], transfer_config=config)
    assert faults.attempts[f"s3.{failing_operation}"] >= 2
    s3 = project.session.client("s3")
    assert project.keys("artifacts/weights/") == []
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    # and the next deploy, with S3 healthy again, completes it
    faults.fail("s3", failing_operation, 500, "InternalError", times=0)
    done = deploying.deploy(Aws.connect(), BUCKET, [item], transfer_config=config)
    assert [d.uploaded for d in done] == [True]
    assert s3.head_object(Bucket=BUCKET, Key=item.key)["ContentLength"] == size


def test_deploy_ships_the_wheelhouse_of_the_chosen_profile_or_none(project: Project) -> None:
    result = invoke("deploy", "--bucket", BUCKET, "--bootstrap-profile", "onnx")
    assert result.exit_code == 0, result.stderr
    manifests = [k for k in project.keys("artifacts/wheelhouse/") if k.endswith("manifest.json")]
    assert len(manifests) == 1 and manifests[0].startswith("artifacts/wheelhouse/onnx/")
    assert not project.keys("artifacts/wheelhouse/tf/")
    assert invoke("deploy", "--bucket", BUCKET, "--prefix", "other", "--no-wheelhouse").exit_code == 0
    assert not project.keys("other/wheelhouse/")
    sha = "0" * 64
    onnx = ["-c", "bootstrap_profile=onnx", "-c", "weights_s3_uri=s3://bkt1/w/m.onnx", "-c", f"weights_sha256={sha}"]
    assert invoke("deploy", "--bucket", BUCKET, "--prefix", "third", *onnx).exit_code == 0
    assert project.keys("third/wheelhouse/onnx/") and not project.keys("third/wheelhouse/tf/")
    bad = invoke("deploy", "--bucket", BUCKET, "-c", "bootstrap_profile=torch")
    assert bad.exit_code == 2 and "bootstrap_profile" in bad.stderr
