"""Issue 21 end to end: the operator's breaker defaults judge a plan that sets no ``spec.safety``.

The chart passes ``sender.maxBounceRate`` and the breaker's sample to the operator as
``EMAILPLAN_DEFAULT_MAX_BOUNCE_RATE`` / ``EMAILPLAN_BREAKER_MIN_SAMPLE``. While the CRD gave
``safety`` a default (0.05 after 100 outcomes), the API server filled it into every plan and
these settings never reached one. Here the operator runs with a stricter setting (1 % after
20 outcomes): 1 bounce in 30 outcomes (3.3 %) pauses the plan, which 5 % after 100 would not.
Real parts as in ``test_e2e_operator_more``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.e2e import API_KEY, Stack, apply_list, plan_yaml

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.postgres import PostgresServer
from devenv.sns import ses_event
from devenv.stack import StackOptions

pytestmark = [pytest.mark.kube, pytest.mark.slow]

STRICT = {"EMAILPLAN_DEFAULT_MAX_BOUNCE_RATE": "0.01", "EMAILPLAN_BREAKER_MIN_SAMPLE": "20"}


@pytest.fixture(scope="module")
def strict(crd_installed: KubeCluster, postgres: PostgresServer, moto_server: MotoServer) -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="emailplan-e2e-settings-"))
    options = StackOptions(api_key=API_KEY, operator_env=STRICT)
    st = Stack(base, options, postgres=postgres, moto=moto_server, kube=crd_installed)
    st.start()
    try:
        yield st
    finally:
        st.stop()
        print(f"e2e logs kept in {base}")


def test_the_operator_setting_pauses_a_plan_without_safety(strict: Stack, namespace: str) -> None:
    marker = f"{namespace}-st"
    emails = [f"{marker}{i}@example.com" for i in range(400)]
    apply_list(strict, namespace, "list", [f"{e},R{i},Rome" for i, e in enumerate(emails)])
    manifest = json.loads(plan_yaml("quiet", recipients_cm="list", rate=10, per_pod_rate=10))
    assert "safety" not in manifest["spec"]
    strict.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    strict.wait_status(namespace, "quiet", lambda s: s.get("sent", 0) >= 30, "first emails sent")
    stored = strict.plan(namespace, "quiet")
    assert stored is not None and "safety" not in stored["spec"], "the API server filled in safety"
    uid = stored["metadata"]["uid"]

    rows = strict.psql(
        "SELECT email || ' ' || ses_message_id FROM messages "
        f"WHERE plan_id = '{uid}' AND status = 'sent' AND ses_message_id IS NOT NULL "
        "ORDER BY id LIMIT 30"
    )
    sent = [line.split(" ", 1) for line in rows]
    assert len(sent) == 30, rows
    for i, (addr, ses_id) in enumerate(sent):
        doc = strict.ses_notification(ses_event("Bounce" if i == 0 else "Delivery", ses_id, [addr]))
        assert strict.post_sns(doc)["status"] == "recorded"

    status = strict.wait_status(
        namespace,
        "quiet",
        lambda s: s.get("phase") == "Suspended" and s.get("bounced", 0) >= 1 and s.get("delivered", 0) >= 29,
        "Suspended by the breaker at the operator's threshold",
    )
    suspended = next(c for c in status["conditions"] if c["type"] == "Suspended")
    assert suspended["status"] == "True" and suspended["reason"] == "BounceRateExceeded", suspended
