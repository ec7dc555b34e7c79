"""Synthesis helpers for the infra tests: one real synth (cdk-nag included) per variant."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Synth:
    """The result of one synth: the assembly directory and each stack's template."""

    outdir: Path
    storage: dict[str, Any]
    cluster: dict[str, Any]
    report: dict[str, Any] | None


def synth(outdir: Path, overrides: Mapping[str, object] | None = None) -> Synth:
    """Synthesize the real app (with cdk-nag) from cdk.json's context plus ``overrides``."""
    from aws_cdk import App

    from infra.app import build

    context = {**json.loads((REPO / "cdk.json").read_text())["context"], **(overrides or {})}
    app = App(outdir=str(outdir), context=context)
    storage, cluster = build(app)
    assembly = app.synth()
    report_path = outdir / "validation-report.json"
    return Synth(
        outdir=outdir,
        storage=assembly.get_stack_by_name(storage.stack_name).template,
        cluster=assembly.get_stack_by_name(cluster.stack_name).template,
        report=json.loads(report_path.read_text()) if report_path.exists() else None,
    )


def resources(template: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    """All resources of ``resource_type`` (for the few checks Match cannot express)."""
    return [r for r in template["Resources"].values() if r["Type"] == resource_type]


@pytest.fixture(scope="package")
def default_synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The app as `cdk synth` builds it with cdk.json's defaults: synthesized once for tests/infra (every module
    only reads the templates and the assembly folder)."""
    return synth(tmp_path_factory.mktemp("cdk-default"))
