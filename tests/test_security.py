"""Issue 6 security review, as checks: nothing secret or account-specific is committed."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO

# moto's default account and the example accounts of AWS documentation: fake by design
FAKE_ACCOUNTS = {"123456789012", "111122223333", "444455556666"}
PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}\b"),
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH )?PRIVATE KEY-----"),
    "account id in an ARN": re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(\d{12}):"),
}


def tracked_text_files() -> list[str]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [n for n in names if not n.endswith(("package-lock.json", ".png"))]


def test_no_secrets_or_account_ids_are_committed() -> None:
    findings = []
    for name in tracked_text_files():
        try:
            text = (REPO / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for what, pattern in PATTERNS.items():
            for match in pattern.finditer(text):
                if what == "account id in an ARN" and match.group(1) in FAKE_ACCOUNTS:
                    continue
                findings.append(f"{name}: {what}: {match.group(0)[:40]}")
    assert not findings, "\n".join(findings)


def test_the_scan_would_catch_a_leak() -> None:
    # Assembled at run time so that this file itself does not contain what it looks for.
    key, account = "AKIA" + "ABCDEFGHIJKLMNOP", "2109876" + "54321"
    leaked = f"aws_access_key_id = {key}\nrole = arn:aws:iam::{account}:role/x"
    hits = [what for what, pattern in PATTERNS.items() if pattern.search(leaked)]
    assert hits == ["AWS access key id", "account id in an ARN"]
