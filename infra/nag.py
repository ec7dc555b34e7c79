"""cdk-nag acknowledgements: one rule per call, with the reason next to the resource it covers.

cdk-nag 3 matches a granular finding (``AwsSolutions-IAM5[Resource::...]``) only by its exact id, and
writes references the way its ``flattenCfnReference`` does (``<Logical.Arn>``, import names, ...).
:func:`finding` renders a CDK token the same way, so acknowledgements name the resource in code
instead of copying hashed logical ids into strings.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge ``rule`` (e.g. ``AwsSolutions-IAM4``) on ``scope`` and its children, with ``reason``."""
    if len(reason) < 40:
        raise ValueError(f"acknowledgement of {rule} needs a specific reason, got {reason!r}")
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def finding(scope: IConstruct, value: str) -> str:
    """``value`` (a string that may hold tokens) as cdk-nag writes it inside ``Resource::...``."""
    return _flatten(Stack.of(scope).resolve(value))


def _flatten(node: Any) -> str:
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return delimiter.join(_flatten(item) for item in items)
        if "Fn::Sub" in node:
            return _flatten(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{_flatten(resource)}.{_flatten(attribute)}>"
        if "Fn::ImportValue" in node:
            return _flatten(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{_flatten(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))
