"""`npx cdk synth` from the repository root, through the pinned CDK CLI (package.json)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra.conftest import REPO

CDK = REPO / "node_modules" / ".bin" / "cdk"


@pytest.mark.skipif(not CDK.exists(), reason="node_modules/.bin/cdk missing: run `npm ci` in the repository root")
@pytest.mark.skipif(shutil.which("npx") is None, reason="npx (Node.js) is not installed")
def test_npx_cdk_synth_from_the_repo_root(tmp_path: Path) -> None:
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "CDK_DISABLE_VERSION_CHECK": "1"}
    run = subprocess.run(
        ["npx", "--no-install", "cdk", "synth", "--quiet", "--no-notices", "-o", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    cluster = json.loads((tmp_path / "featurizer-cluster.template.json").read_text())
    assert {"ProjectBucketName", "ClusterId", "ConsoleStepJson"} <= set(cluster["Outputs"])
    assert (tmp_path / "featurizer-storage.template.json").is_file()
    version = subprocess.run(
        ["npx", "--no-install", "cdk", "--version"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("2.1148.1"), version.stdout  # the CLI pinned in package.json ran
