"""End to end: a plan SES refuses says why, in its status, its Events and ``emailplan failures``.

The stack verifies ``example.com`` in moto; this plan sends from a domain nobody
verified, so moto's SES refuses every send (``MessageRejected``), as real SES does
for an identity that is not verified. The person who reads the plan afterwards must
see the reason, not only "3 failed".
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess

import pytest
from support.e2e import API_KEY, VENV_BIN, Stack, apply_list, done, plan_yaml

from devenv.ports import wait_for

pytestmark = [pytest.mark.kube, pytest.mark.slow]

REASON = "MessageRejected: Did not have authority to send from email"


def test_a_plan_refused_by_ses_names_the_reason_everywhere(stack: Stack, namespace: str) -> None:
    marker = f"{namespace}-nv"
    emails = [f"{marker}{i}@example.com" for i in range(3)]
    apply_list(stack, namespace, "list", [f"{e},R{i},Rome" for i, e in enumerate(emails)])
    manifest = plan_yaml(
        "unverified",
        recipients_cm="list",
        rate=50,
        per_pod_rate=50,
        sender="Acme <news@unverified.example.net>",
    )
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    status = stack.wait_status(namespace, "unverified", done, "Completed")
    assert (status["failed"], status["sent"], status["total"]) == (3, 0, 3), status
    assert status["failures"] == [{"reason": REASON, "count": 3}]
    assert not stack.received(marker)

    def completed_warning() -> bool:
        return any(
            e["type"] == "Warning" and e["reason"] == "Completed" and REASON in e["message"]
            for e in stack.events(namespace, "unverified")
        )

    wait_for(completed_warning, 60, "a Warning Completed Event naming the reason")

    env = {
        **os.environ,
        "KUBECONFIG": str(stack.kubeconfig),
        "EMAILPLAN_API_URL": stack.api_url,
        "EMAILPLAN_API_KEY": API_KEY,
        "COLUMNS": "200",
    }
    run = [str(VENV_BIN / "emailplan"), "failures", f"{namespace}/unverified"]
    out = subprocess.run([*run, "--format", "csv"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert sorted(r["email"] for r in rows) == emails
    assert {(r["status"], r["reason"]) for r in rows} == {("failed", REASON)}
    assert all("news@unverified.example.net" in r["detail"] for r in rows)  # the whole SES answer
    table = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert table.returncode == 0, table.stderr
    assert all(e in table.stdout for e in emails) and REASON in table.stdout
    # The API the CLI read: the plan view carries the same top reason.
    uid = json.loads(stack.kubectl("get", "emailplan", "unverified", "-n", namespace, "-o", "json"))[
        "metadata"
    ]["uid"]
    assert stack.api_call("GET", f"/v1/plans/{uid}")["failures"] == [{"reason": REASON, "count": 3}]
