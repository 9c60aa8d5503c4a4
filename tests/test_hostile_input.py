"""Hostile and sloppy input (issue 10): nothing gets through that should not, nothing answers 5xx.

Each numbered case of the issue is a test here, against the real parts: the
API on loopback with a migrated PostgreSQL, real ``emailplan worker`` and
``emailplan api``/``operator`` processes, moto as the SES stand-in, and the
kube-apiserver for admission. The property tests (hypothesis) generate hostile
values for every header-bearing field and hostile bodies for every JSON
endpoint; every message that reaches the SES stand-in is parsed back and must
carry exactly the headers the sender writes, one From with the configured
address, and no Bcc or Cc.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from support.api import HEADERS, LiveApi, make_plan, start_api, stop_api
from support.e2e import Stack, plan_yaml
from support.worker import SENDER_HEADERS

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.ports import free_port
from devenv.sns import notification, ses_event

EXE = str(Path(sys.executable).with_name("emailplan"))
SENDER = "news@example.com"
INJECTION = "Shop\r\nBcc: victim@example.com <noreply@shop.example>"
LONG_LOCAL = "a" * 65 + "@example.com"
DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000


# Pieces of hostile header values: line breaks of every kind, control characters,
# header syntax, address syntax, encoded words, and harmless text to mix them with.
FRAGMENTS = [
    "\r\n",
    "\n",
    "\r",
    "\r\nBcc: victim@evil.example",
    "\nCc: victim@evil.example",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    ",",
    ";",
    ":",
    "<",
    ">",
    '"',
    "\\",
    "(",
    ")",
    "@",
    "victim@evil.example",
    "=?utf-8?q?Bcc=3A_x?=",
    "=?",
    "é",
    "😀",
    "Shop",
    " ",
    "\t",
    "A" * 40,
]
hostile_text = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=8).map("".join)


def plan_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "hostile",
        "namespace": "ns",
        "from": f"News <{SENDER}>",
        "subject": "Hello {{ name }}",
        "text": "Hi {{ name }}",
        "tracking": {"opens": False, "clicks": False},
    }
    body.update(overrides)
    return body


async def error_of(resp: Any) -> dict[str, Any]:
    """The JSON error body every 4xx must carry."""
    assert resp.content_type == "application/json", await resp.text()
    doc = await resp.json()
    assert isinstance(doc.get("error"), dict) and doc["error"].get("message"), doc
    return dict(doc["error"])


@pytest.fixture
async def live(migrated: str, ident: Any, aws: MotoServer) -> AsyncIterator[LiveApi]:
    """The API with its SQS client (plans can be completed and sent by a real worker)."""
    boto3.client("ses", endpoint_url=aws.endpoint_url).verify_domain_identity(Domain="example.com")
    api = await start_api(migrated, ident, with_aws=True)
    try:
        yield api
    finally:
        await stop_api(api)


# ---------------------------------------------------------------- 1. CR/LF in header-bearing fields


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from", INJECTION),
        ("from", "victim@evil.example, News <news@example.com>"),
        ("replyTo", [INJECTION]),
        ("subject", "Hello\r\nBcc: victim@example.com"),
        ("subject", "Hello =?utf-8?q?=0D=0ABcc=3A_x?="),
    ],
)
async def test_case1_plan_api_refuses_header_injection_naming_the_field(
    api: LiveApi, field: str, value: Any
) -> None:
    resp = await api.client.put(
        f"/v1/plans/{uuid.uuid4()}", json=plan_body(**{field: value}), headers=HEADERS
    )
    assert resp.status == 400, await resp.text()
    error = await error_of(resp)
    assert str(error.get("field", "")).startswith(field), error


async def test_case1_plan_api_refuses_header_injection_in_ses_tags(api: LiveApi) -> None:
    body = plan_body(ses={"tags": {"campaign": "spring\r\nBcc: victim@example.com"}})
    resp = await api.client.put(f"/v1/plans/{uuid.uuid4()}", json=body, headers=HEADERS)
    assert resp.status == 400, await resp.text()
    assert "ses.tags" in str((await error_of(resp)).get("field")), await resp.text()


def test_case1_admission_refuses_crlf_in_from_and_subject(crd_installed: KubeCluster, namespace: str) -> None:
    """kubectl apply with a CR/LF display name is refused by the API server, naming spec.from."""
    for field, value in (("from", INJECTION), ("subject", "Hi\r\nBcc: victim@example.com")):
        spec = {
            "from": f"News <{SENDER}>",
            "subject": "Hi",
            "text": "Hi",
            "recipients": {"inline": [{"email": "ann@example.com"}]},
            field: value,
        }
        manifest = {
            "apiVersion": "emailplan.io/v1alpha1",
            "kind": "EmailPlan",
            "metadata": {"name": f"inj-{field}", "namespace": namespace},
            "spec": spec,
        }
        out = crd_installed.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
        assert out.returncode != 0, f"{field} with CR/LF was admitted"
        assert f"spec.{field}" in out.stderr, out.stderr


# ---------------------------------------------------------------- 2. RFC 5321 lengths at every intake


async def test_case2_upload_rejects_a_65_character_local_part_with_its_reason(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    resp = await api.client.put(f"/v1/plans/{plan_id}", json=plan_body(), headers=HEADERS)
    assert resp.status == 201, await resp.text()
    rows = "\n".join(json.dumps({"email": e}) for e in (LONG_LOCAL, "a" * 64 + "@example.com"))
    resp = await api.client.post(
        f"/v1/plans/{plan_id}/recipients",
        data=rows + "\n",
        headers={**HEADERS, "Content-Type": "application/x-ndjson"},
    )
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["accepted"] == 1 and result["rejected"] == 1, result
    (error,) = result["rejectedRows"]
    assert error["row"] == 1 and error["field"] == "email" and "64" in error["message"], error


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_an_ndjson_row_with_a_non_json_number_is_refused_alone(api: LiveApi, constant: str) -> None:
    """``NaN`` and ``Infinity`` are not JSON (RFC 8259), and PostgreSQL cannot store them in jsonb.

    Python's JSON parser accepts them, so such a row once reached the database and failed the
    whole batch; it must be refused with its number and field, and the rest of the list loaded.
    """
    plan_id = uuid.uuid4()
    resp = await api.client.put(f"/v1/plans/{plan_id}", json=plan_body(), headers=HEADERS)
    assert resp.status == 201, await resp.text()
    rows = ['{"email": "a@example.com"}', f'{{"email": "b@example.com", "vars": {{"score": {constant}}}}}']
    rows += ['{"email": "c@example.com", "vars": {"score": 1.5}}']
    resp = await api.client.post(
        f"/v1/plans/{plan_id}/recipients",
        data="\n".join(rows) + "\n",
        headers={**HEADERS, "Content-Type": "application/x-ndjson"},
    )
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert (result["accepted"], result["rejected"]) == (2, 1), result
    (error,) = result["rejectedRows"]
    assert error["row"] == 2 and constant.lstrip("-") in error["message"], error


async def test_case2_suppressions_and_from_refuse_a_65_character_local_part(api: LiveApi) -> None:
    resp = await api.client.post("/v1/suppressions", json={"emails": [LONG_LOCAL]}, headers=HEADERS)
    assert resp.status == 400, await resp.text()
    error = await error_of(resp)
    assert error["field"] == "emails[0]" and "64" in error["message"], error
    resp = await api.client.put(
        f"/v1/plans/{uuid.uuid4()}", json=plan_body(**{"from": f"News <{LONG_LOCAL}>"}), headers=HEADERS
    )
    assert resp.status == 400, await resp.text()
    assert (await error_of(resp))["field"] == "from"


async def test_upload_refuses_a_non_ascii_local_part_and_keeps_idn_domains_as_punycode(api: LiveApi) -> None:
    """SES sends no SMTPUTF8: the row is refused with its number and why. An IDN domain is
    stored in its punycode form, so a suppression written either way matches it."""
    resp = await api.client.post(
        "/v1/suppressions", json={"emails": ["gone@xn--bcher-kva.example"]}, headers=HEADERS
    )
    assert resp.status == 200, await resp.text()
    plan_id = uuid.uuid4()
    resp = await api.client.put(f"/v1/plans/{plan_id}", json=plan_body(), headers=HEADERS)
    assert resp.status == 201, await resp.text()
    rows = ["ann@example.com", "üser@example.com", "user@bücher.example", "Gone@BÜCHER.example"]
    resp = await api.client.post(
        f"/v1/plans/{plan_id}/recipients",
        data="".join(json.dumps({"email": e}) + "\n" for e in rows),
        headers={**HEADERS, "Content-Type": "application/x-ndjson"},
    )
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    (error,) = result["rejectedRows"]
    assert error["row"] == 2 and error["field"] == "email", error
    assert "non-ASCII local part" in error["message"] and "SMTPUTF8" in error["message"], error
    assert result["accepted"] == 2 and result["suppressed"] == 1, result
    resp = await api.client.post("/v1/suppressions", json={"emails": ["zoë@example.com"]}, headers=HEADERS)
    assert resp.status == 400 and "non-ASCII local part" in (await error_of(resp))["message"]
    resp = await api.client.put(
        f"/v1/plans/{uuid.uuid4()}", json=plan_body(**{"from": "Zoë <zoë@example.com>"}), headers=HEADERS
    )
    assert resp.status == 400 and (await error_of(resp))["field"] == "from"


def test_case2_admission_refuses_a_65_character_local_part(
    crd_installed: KubeCluster, namespace: str
) -> None:
    manifest = {
        "apiVersion": "emailplan.io/v1alpha1",
        "kind": "EmailPlan",
        "metadata": {"name": "long-local", "namespace": namespace},
        "spec": {
            "from": f"News <{SENDER}>",
            "subject": "Hi",
            "text": "Hi",
            "recipients": {"inline": [{"email": LONG_LOCAL}]},
        },
    }
    out = crd_installed.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert out.returncode != 0 and "email" in out.stderr, out.stderr


# ---------------------------------------------------------------- 3. deeply nested JSON


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
async def test_case3_deep_json_is_a_400_naming_the_problem_on_every_json_endpoint(
    api: LiveApi, body: bytes
) -> None:
    plan_id = uuid.uuid4()
    for method, path, ctype in (
        ("POST", "/v1/events/result", "text/plain"),
        ("PUT", f"/v1/plans/{plan_id}", "application/json"),
        ("POST", "/v1/suppressions", "application/json"),
        ("POST", f"/v1/plans/{plan_id}/recipients/s3", "application/json"),
    ):
        resp = await api.client.request(method, path, data=body, headers={**HEADERS, "Content-Type": ctype})
        assert resp.status == 400, (path, resp.status, await resp.text())
        assert "nested deeper" in (await error_of(resp))["message"], path


async def test_case3_deep_json_row_in_an_upload_is_a_rejected_row(api: LiveApi) -> None:
    plan_id = uuid.uuid4()
    resp = await api.client.put(f"/v1/plans/{plan_id}", json=plan_body(), headers=HEADERS)
    assert resp.status == 201
    resp = await api.client.post(
        f"/v1/plans/{plan_id}/recipients",
        data=b'{"email": "ann@example.com"}\n' + DEEP_OBJECT + b"\n",
        headers={**HEADERS, "Content-Type": "application/x-ndjson"},
    )
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["accepted"] == 1 and result["rejected"] == 1, result
    assert result["rejectedRows"][0]["row"] == 2 and "nested deeper" in result["rejectedRows"][0]["message"]


# ---------------------------------------------------------------- 4. soft bounces


async def test_case4_soft_bounces_have_a_count_of_their_own(api: LiveApi) -> None:
    emails = ["hard@example.com", "soft@example.com", "undetermined@example.com"]
    plan_id, ids, ses_ids = await make_plan(api, emails)
    for address, kind in (
        ("hard@example.com", "Permanent"),
        ("soft@example.com", "Transient"),
        ("undetermined@example.com", "Undetermined"),
    ):
        event = ses_event("Bounce", ses_ids[address], [address], message_ref=ids[address], bounce_type=kind)
        resp = await api.post_sns(notification(api.ident, api.certs.cert_url, event))
        assert resp.status == 200, await resp.text()
    counts = await api.counts(plan_id)
    assert counts["bounced"] == 1 and counts["softBounced"] == 2, counts
    # Only the hard bounce is suppressed.
    resp = await api.client.get(f"/v1/plans/{plan_id}", headers=HEADERS)
    assert (await resp.json())["counts"]["softBounced"] == 2


def test_case4_crd_and_openapi_say_what_bounced_and_soft_bounced_count(repo_root: str) -> None:
    from emailplan.sender.api.openapi import DOCUMENT

    crd = yaml.safe_load(Path(repo_root, "crds", "emailplan.yaml").read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert "Permanent" in status["bounced"]["description"], status["bounced"]
    assert "Transient" in status["softBounced"]["description"], status.get("softBounced")
    assert "softBounced" in DOCUMENT["components"]["schemas"]["PlanCounts"]["properties"]
    assert "softBounced" in DOCUMENT["info"]["description"]


# ---------------------------------------------------------------- 5. long plan names


def test_case5_names_built_from_a_long_plan_name_are_valid_and_distinct() -> None:
    from emailplan.operator.deployment import deployment_name, labels

    a, b = "x" * 250 + "a", "x" * 250 + "b"
    for name in (a, b):
        assert len(deployment_name(name)) <= 63 and deployment_name(name).endswith("-sender")
        assert len(labels(name, "uid")["app.kubernetes.io/instance"]) <= 63
    assert deployment_name(a) != deployment_name(b)
    assert deployment_name("short") == "emailplan-short-sender"


@pytest.mark.kube
@pytest.mark.slow
def test_case5_a_plan_with_a_253_character_name_is_sent(stack: Stack, namespace: str) -> None:
    """The longest name Kubernetes allows: the operator's Deployment is valid and the plan completes."""
    name = "long-" + "n" * 248
    marker = f"{namespace}-long"
    inline = [
        {"email": f"{marker}{i}@example.com", "name": "Reader", "vars": {"city": "Oslo"}} for i in range(3)
    ]
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=plan_yaml(name, inline=inline, rate=50))
    status = stack.wait_status(
        namespace, name, lambda s: s.get("phase") == "Completed", "long-named plan Completed"
    )
    assert status["sent"] == 3, status
    assert sorted(stack.received(marker).values()) == [1, 1, 1]
    deployments = json.loads(stack.kubectl("get", "deployments", "-n", namespace, "-o", "json"))["items"]
    assert all(len(d["metadata"]["name"]) <= 63 for d in deployments), [
        d["metadata"]["name"] for d in deployments
    ]


# ---------------------------------------------------------------- 6. no built-in keys in production


def _bare_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAILPLAN_")}
    env.update({"EMAILPLAN_METRICS_PORT": "0", **extra})
    return env


@pytest.mark.parametrize(
    ("command", "missing"),
    [
        (["api", "--host", "127.0.0.1", "--port", "0"], "EMAILPLAN_TOKEN_KEY"),
        (["worker", "--plan-id", str(uuid.UUID(int=1))], "EMAILPLAN_TOKEN_KEY"),
        (["operator", "--standalone"], "EMAILPLAN_API_KEY"),
    ],
)
def test_case6_processes_without_keys_refuse_to_start_in_one_line(command: list[str], missing: str) -> None:
    r = subprocess.run([EXE, *command], env=_bare_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and missing in lines[0] and "EMAILPLAN_DEV_MODE" in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_case6_api_without_api_key_refuses_and_dev_mode_is_explicit() -> None:
    r = subprocess.run(
        [EXE, "api", "--port", "0"],
        env=_bare_env(EMAILPLAN_TOKEN_KEY="k" * 32),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "EMAILPLAN_API_KEY" in r.stderr, r.stderr
    from emailplan.sender.settings import SenderSettings

    dev = SenderSettings(dev_mode=True)
    dev.require_secrets("token_key", "api_key")  # filled with the development keys only when asked


# ---------------------------------------------------------------- 7. case-insensitive de-duplication


async def test_case7_case_insensitive_dedup_is_documented_and_done(api: LiveApi, repo_root: str) -> None:
    from emailplan.sender.api.openapi import DOCUMENT

    readme = Path(repo_root, "README.md").read_text()
    assert "case-insensitive" in readme.lower()
    crd = yaml.safe_load(Path(repo_root, "crds", "emailplan.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert "case-insensitively" in spec["recipients"]["description"]
    assert "case-insensitively" in DOCUMENT["info"]["description"]

    plan_id = uuid.uuid4()
    await api.client.put(f"/v1/plans/{plan_id}", json=plan_body(), headers=HEADERS)
    resp = await api.client.post(
        f"/v1/plans/{plan_id}/recipients",
        data="email\nAnn@Example.com\nann@example.COM\n",
        headers={**HEADERS, "Content-Type": "text/csv"},
    )
    result = await resp.json()
    assert result["accepted"] == 1 and result["duplicates"] == 1, result


# ---------------------------------------------------------------- database down: 503, said at start


async def test_endpoints_needing_the_database_answer_503_with_a_reason_while_it_is_down(ident: Any) -> None:
    dead = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/gone"
    api = await start_api(dead, ident)
    try:
        plan_id = uuid.uuid4()
        for method, path, body in (
            ("GET", f"/v1/results/count/{plan_id}", None),
            ("GET", f"/v1/plans/{plan_id}", None),
            ("PUT", f"/v1/plans/{plan_id}", plan_body()),
            ("POST", "/v1/suppressions", {"emails": ["ann@example.com"]}),
            ("GET", "/v1/results/sent", None),
            ("GET", "/readyz", None),
        ):
            resp = await api.client.request(method, path, json=body, headers=HEADERS)
            assert resp.status == 503, (path, resp.status, await resp.text())
            assert "database unreachable" in (await error_of(resp))["message"], path
    finally:
        await stop_api(api)


def test_api_started_without_its_database_says_so_in_one_warning(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "EMAILPLAN_DATABASE_URL": f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/gone",
        "EMAILPLAN_METRICS_PORT": "0",
    }
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [EXE, "api", "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while "database" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        text = log.read_text()
        assert "cannot reach 127.0.0.1" in text and "/gone" in text, text
        assert '"api started"' not in text and "message=api started\n" not in text, text
    finally:
        proc.terminate()
        proc.wait(30)


# ---------------------------------------------------------------- properties: hostile JSON bodies


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), hostile_text)
json_value = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4)
)


def _deep(n: int) -> bytes:
    return b'{"emails":' + b"[" * n + b'"a@example.com"' + b"]" * n + b"}"


raw_bodies = st.one_of(
    json_value.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.integers(min_value=30, max_value=20000).map(_deep),
    st.integers(min_value=1, max_value=50000).map(
        lambda n: json.dumps({f"k{i}": i for i in range(n)}).encode()
    ),
    st.builds(
        lambda v: json.dumps(plan_body(**v)).encode(),
        st.dictionaries(
            st.sampled_from(["from", "replyTo", "subject", "name", "text", "ses"]), json_value, max_size=3
        ),
    ),
)


@settings(
    max_examples=int(os.environ.get("EMAILPLAN_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=raw_bodies, which=st.integers(min_value=0, max_value=4))
@example(body=DEEP, which=0)
@example(body=json.dumps(plan_body(**{"from": INJECTION})).encode(), which=1)
async def test_no_json_endpoint_answers_5xx_to_hostile_bodies(api: LiveApi, body: bytes, which: int) -> None:
    plan_id = uuid.uuid4()
    method, path, ctype = [
        ("POST", "/v1/events/result", "text/plain"),
        ("PUT", f"/v1/plans/{plan_id}", "application/json"),
        ("POST", "/v1/suppressions", "application/json"),
        ("POST", f"/v1/plans/{plan_id}/recipients", "application/x-ndjson"),
        ("POST", f"/v1/plans/{plan_id}/recipients/s3", "application/json"),
    ][which]
    resp = await api.client.request(method, path, data=body, headers={**HEADERS, "Content-Type": ctype})
    assert resp.status < 500, (path, resp.status, await resp.text())
    if resp.status >= 400:
        await error_of(resp)


# ---------------------------------------------------------------- properties: hostile headers end to end


def _received(aws: MotoServer, marker: str) -> list[EmailMessage]:
    stored = aws.data().get("ses", {}).get("RawMessage", [])
    out = []
    for item in stored if isinstance(stored, list) else stored.values():
        msg = email.message_from_string(item["raw_data"], policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        if marker in str(item.get("destinations") or "") or marker in item["raw_data"]:
            out.append(msg)
    return out


async def _send_with_worker(live: LiveApi, plan_id: uuid.UUID, tmp: Path) -> None:
    env = {
        **os.environ,
        "EMAILPLAN_DATABASE_URL": live.settings.database_url.get_secret_value(),
        "EMAILPLAN_PLAN_ID": str(plan_id),
        "EMAILPLAN_METRICS_PORT": "0",
        "EMAILPLAN_MAX_SEND_RATE": "1000",
        "EMAILPLAN_FLUSH_SECONDS": "0.5",
        "EMAILPLAN_POLL_WAIT_SECONDS": "1",
        "EMAILPLAN_EXIT_WHEN_IDLE": "true",
        "EMAILPLAN_TOKEN_KEY": "hostile-token-key",
        "EMAILPLAN_PUBLIC_URL": "https://mail.example.org",
    }
    log = tmp / f"worker-{plan_id}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([EXE, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(log.read_text()[-3000:])
        await asyncio.sleep(0.2)
    assert proc.returncode == 0, log.read_text()[-3000:]


def _assert_only_intended_headers(msg: EmailMessage, reply_to: bool) -> None:
    names = {k.lower() for k in msg}
    assert names <= SENDER_HEADERS, sorted(names - SENDER_HEADERS)
    froms = msg.get_all("From") or []
    assert len(froms) == 1, froms
    addresses = msg["From"].addresses
    assert len(addresses) == 1 and addresses[0].addr_spec == SENDER, msg["From"]
    assert msg.get_all("Bcc") is None and msg.get_all("Cc") is None
    assert len(msg["To"].addresses) == 1
    if reply_to:
        assert len(msg.get_all("Reply-To") or []) == 1


@settings(
    max_examples=int(os.environ.get("EMAILPLAN_HYPOTHESIS_SEND_EXAMPLES", "12")),
    deadline=None,
    # Every example runs a worker process: shrinking a failure would take many minutes, and
    # the failing values are printed as they are.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    display=hostile_text, subject=hostile_text, variable=hostile_text, name=hostile_text, reply=hostile_text
)
@example(display="Shop\r\nBcc: victim@example.com", subject="Hi", variable="x", name="Ann", reply="R")
@example(display="Shop", subject="Hi", variable="x\r\nBcc: victim@evil.example", name="Ann", reply="R")
@example(display='"Shop, Inc." (x)', subject="=?", variable="\u2028Cc: a@b.example", name="A\x85B", reply="é")
async def test_hostile_header_values_never_add_a_header_to_what_ses_receives(
    live: LiveApi,
    aws: MotoServer,
    tmp_path: Path,
    display: str,
    subject: str,
    variable: str,
    name: str,
    reply: str,
) -> None:
    """Hostile from/replyTo/subject/recipient name/variables: refused with a 400, or sent safely."""
    plan_id = uuid.uuid4()
    marker = uuid.uuid4().hex[:10]
    body = plan_body(
        **{
            "from": f"{display} <{SENDER}>",
            "replyTo": [f"{reply} <reply@example.com>"],
            "subject": subject + " {{ code }}",
        }
    )
    resp = await live.client.put(f"/v1/plans/{plan_id}", json=body, headers=HEADERS)
    if resp.status == 400:
        error = await error_of(resp)
        assert str(error.get("field")).startswith(("from", "replyTo[0]", "subject")), error
        body = plan_body(subject="Hello {{ code }}")  # the recipient side must still be tried
        resp = await live.client.put(f"/v1/plans/{plan_id}", json=body, headers=HEADERS)
    assert resp.status == 201, await resp.text()
    rows = [
        {"email": f"r1-{marker}@example.com", "name": name, "vars": {"code": variable}},
        {"email": f"r2-{marker}@example.com", "name": "Plain", "vars": {"code": variable}},
    ]
    resp = await live.client.post(
        f"/v1/plans/{plan_id}/recipients",
        data="".join(json.dumps(r) + "\n" for r in rows),
        headers={**HEADERS, "Content-Type": "application/x-ndjson"},
    )
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    for error in result["rejectedRows"]:
        # refused per row: a name that cannot be a header, or variables PostgreSQL cannot store (NUL)
        assert (error["field"], error["row"]) in {("name", 1), ("vars", 1), ("vars", 2)}, result
    resp = await live.client.post(f"/v1/plans/{plan_id}/recipients/complete", headers=HEADERS)
    assert resp.status == 200, await resp.text()
    if not result["accepted"]:
        return  # every row refused: nothing to send
    await _send_with_worker(live, plan_id, tmp_path)
    got = _received(aws, marker)
    assert len(got) == result["accepted"], (len(got), result)
    for msg in got:
        _assert_only_intended_headers(msg, reply_to="replyTo" in body)
