"""``emailplan sns`` refuses to play SES outside a development stack and names what is missing.

The command signs SES events with a local stack's throw-away key, so it works only with
``EMAILPLAN_DEV_MODE=1``; each missing setting is named with its variable and its flag.
Posting real events to a running stack is proven by tests/test_demo.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

EMAILPLAN = os.path.join(os.path.dirname(sys.executable), "emailplan")
SETTINGS = (
    "EMAILPLAN_DEV_MODE",
    "EMAILPLAN_API_URL",
    "EMAILPLAN_AWS_ENDPOINT_URL",
    "EMAILPLAN_DEV_SNS_KEY_FILE",
    "EMAILPLAN_DEV_SNS_CERT_URL",
)


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    return subprocess.run(
        [EMAILPLAN, "sns", *args], capture_output=True, text=True, cwd="/", env={**clean, **env}, timeout=60
    )


def test_outside_dev_mode_it_refuses() -> None:
    r = run(
        "delivery",
        "11111111-1111-1111-1111-111111111111",
        EMAILPLAN_API_URL="http://127.0.0.1:1",
        EMAILPLAN_AWS_ENDPOINT_URL="http://127.0.0.1:1",
    )
    assert r.returncode == 1
    assert "EMAILPLAN_DEV_MODE=1" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({}, "EMAILPLAN_API_URL or pass --api-url"),
        ({"EMAILPLAN_API_URL": "http://127.0.0.1:1"}, "EMAILPLAN_AWS_ENDPOINT_URL or pass --ses-url"),
        (
            {"EMAILPLAN_API_URL": "http://127.0.0.1:1", "EMAILPLAN_AWS_ENDPOINT_URL": "http://127.0.0.1:1"},
            "EMAILPLAN_DEV_SNS_KEY_FILE or pass --key-file",
        ),
    ],
)
def test_each_missing_setting_is_named(given: dict[str, str], named: str) -> None:
    r = run("bounce", "demo/spring-launch", EMAILPLAN_DEV_MODE="1", **given)
    assert r.returncode == 1
    assert named in r.stderr and "Traceback" not in r.stderr


def test_unknown_event_lists_the_choices() -> None:
    r = run("explode", "demo/spring-launch", EMAILPLAN_DEV_MODE="1")
    assert r.returncode == 2
    assert "delivery" in r.stderr and "complaint" in r.stderr


def test_the_ses_stand_in_unreachable_is_one_clear_line() -> None:
    r = run(
        "open",
        "11111111-1111-1111-1111-111111111111",
        EMAILPLAN_DEV_MODE="1",
        EMAILPLAN_API_URL="http://127.0.0.1:1",
        EMAILPLAN_AWS_ENDPOINT_URL="http://127.0.0.1:1",
    )
    assert r.returncode == 1
    assert "cannot read the mail SES accepted" in r.stderr and "Traceback" not in r.stderr
