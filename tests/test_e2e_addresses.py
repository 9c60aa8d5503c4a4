"""End to end (issue 20): addresses SES can send, from ``kubectl apply`` to what SES received.

An internationalized domain is sent as punycode (in an inline list and in a ConfigMap list);
a row whose local part is not ASCII (SES sends no SMTPUTF8 mail) is refused by its row
number with the reason, in the plan's ``RecipientsRejected`` Event, and everyone else on
the list is sent. Real kube-apiserver, operator, API, pod runner and worker processes,
PostgreSQL and moto.
"""

from __future__ import annotations

import json

import pytest
from support.e2e import Stack, apply_list, done, plan_yaml

pytestmark = [pytest.mark.kube, pytest.mark.slow]


def test_idn_recipients_are_sent_as_punycode_and_smtputf8_rows_are_refused_by_row(
    stack: Stack, namespace: str
) -> None:
    marker = f"{namespace}-idn"
    rows = [
        f"{marker}0@bücher.example,Zoë Müller,Köln",  # row 1: IDN domain
        f"ü{marker}@example.com,Üwe,Bonn",  # row 2: non-ASCII local part
        f"{marker}1@example.com,Ann,Oslo",  # row 3
    ]
    apply_list(stack, namespace, "idn-list", rows)
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=plan_yaml("idn-list", recipients_cm="idn-list"))
    inline = json.loads(
        plan_yaml("idn-inline", inline=[{"email": f"{marker}2@bücher.example", "name": "Zoë"}])
    )
    inline["spec"]["text"] = inline["spec"]["html"] = "Hi {{ name }}"
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(inline))

    status = stack.wait_status(namespace, "idn-list", done, "ConfigMap plan Completed")
    assert (status["sent"], status["failed"], status["total"]) == (2, 0, 2), status
    rejected = [
        e["message"] for e in stack.events(namespace, "idn-list") if e["reason"] == "RecipientsRejected"
    ]
    assert len(rejected) == 1, rejected
    assert "row 2:" in rejected[0] and "non-ASCII local part" in rejected[0], rejected
    assert "row 1" not in rejected[0] and "row 3" not in rejected[0], rejected

    status = stack.wait_status(namespace, "idn-inline", done, "inline plan Completed")
    assert (status["sent"], status["failed"]) == (1, 0), status

    got = stack.received(marker)
    assert set(got) == {
        f"{marker}0@xn--bcher-kva.example",
        f"{marker}1@example.com",
        f"{marker}2@xn--bcher-kva.example",
    }, got
    assert max(got.values()) == 1
