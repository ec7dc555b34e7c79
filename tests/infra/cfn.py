"""Helpers to read synthesized templates: flatten intrinsics to strings and run cfn-lint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ACCOUNT_REGION = "${AWS::AccountId}-${AWS::Region}"
PROJECT_BUCKET = f"featurizer-project-{ACCOUNT_REGION}"
LOGS_BUCKET = f"featurizer-logs-{ACCOUNT_REGION}"
# The only cfn-lint findings allowed: Lambdas made by CDK's Function construct (BucketDeployment, bucket
# auto-delete, the stack's NetworkHandler) list their role in DependsOn as well as referencing it (W3005,
# harmless); by rule id and resource only.
ALLOWED_LINT = {
    ("W3005", "CustomCDKBucketDeployment"),
    ("W3005", "CustomS3AutoDeleteObjectsCustomResourceProvider"),
    ("W3005", "NetworkHandler"),
}


def flat(value: Any) -> Any:
    """Replace Fn::Join/Ref/Fn::Sub in ``value`` by readable strings, recursively (`${Name}` for refs)."""
    if isinstance(value, list):
        return [flat(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"Fn::Join"}:
            delimiter, parts = value["Fn::Join"]
            return delimiter.join(str(flat(p)) for p in parts)
        if set(value) == {"Ref"}:
            return "${" + value["Ref"] + "}"
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            return value["Fn::Sub"]
        if set(value) == {"Fn::GetAtt"}:
            return "${" + ".".join(value["Fn::GetAtt"]) + "}"
        if set(value) == {"Fn::ImportValue"}:
            return "${Import:" + str(flat(value["Fn::ImportValue"])) + "}"
        return {k: flat(v) for k, v in value.items()}
    return value


def cfn_lint(templates: list[Path]) -> list[dict[str, Any]]:
    """cfn-lint findings (JSON) for ``templates``, minus the acknowledged CDK-generated ones."""
    run = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "--format", "json", *map(str, templates)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode in (0, 2, 4, 6, 8, 10, 12, 14), run.stderr  # bit flags: 2 error, 4 warning, 8 info
    findings = json.loads(run.stdout or "[]")
    return [
        f
        for f in findings
        if not any(
            f["Rule"]["Id"] == rule and prefix in json.dumps(f["Location"]["Path"]) for rule, prefix in ALLOWED_LINT
        )
    ]
