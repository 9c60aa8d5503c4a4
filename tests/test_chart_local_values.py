"""The chart's values for clusters without DNS and without a registry (node mode, ci/values-local.yaml)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "emailplan"
LOCAL = CHART / "ci" / "values-local.yaml"


def _template(helm_bin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_bin, "template", "emailplan", str(CHART), "-n", "mail", *args], capture_output=True, text=True
    )


def _docs(helm_bin: str, *args: str) -> list[dict[str, Any]]:
    proc = _template(helm_bin, *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator"))
    return {e["name"]: e.get("value", "") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_fixed_cluster_ip_is_what_the_operator_calls(helm_bin: str) -> None:
    docs = _docs(helm_bin, "-f", str(LOCAL), "--set", "image.tag=local-test")
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "emailplan-api")
    assert service["spec"]["clusterIP"] == "10.96.100.10"
    assert _operator_env(docs)["EMAILPLAN_API_URL"] == "http://10.96.100.10:80"
    # Nothing is pulled on the local node: every pod, and the sender pods, use the imported image.
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]
    assert pods and all(c["imagePullPolicy"] == "Never" for p in pods for c in p["containers"])
    assert _operator_env(docs)["EMAILPLAN_SENDER_IMAGE_PULL_POLICY"] == "Never"


def test_default_calls_the_api_by_its_dns_name(helm_bin: str) -> None:
    docs = _docs(helm_bin)
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "emailplan-api")
    assert "clusterIP" not in service["spec"]
    assert _operator_env(docs)["EMAILPLAN_API_URL"] == "http://emailplan-api.mail.svc:80"


def test_a_malformed_cluster_ip_is_refused_naming_the_field(helm_bin: str) -> None:
    proc = _template(helm_bin, "--set", "api.service.clusterIP=10.96.300.1")
    assert proc.returncode != 0
    assert "clusterIP" in proc.stderr
