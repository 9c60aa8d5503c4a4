"""The Helm chart, rendered and linted without a cluster.

What a user would notice: `helm lint` complaints, a chart that does not render, a
typo in values that is silently ignored, pods that a restricted namespace refuses,
an operator that can read Secrets, a CRD that drifts from the repository's.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.decisions import SPEC as MINIMAL_SPEC

from devenv.kube import KubeCluster
from emailplan.operator.planspec import read_spec
from emailplan.operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "emailplan"
FULL_VALUES = REPO / "examples" / "values-full.yaml"
EXAMPLE_VALUES = sorted((REPO / "examples").glob("values-*.yaml"))


def helm(helm_bin: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [helm_bin, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": "/tmp",
            "HELM_CACHE_HOME": "/tmp/helm-cache",
            "HELM_CONFIG_HOME": "/tmp/helm-config",
            "HELM_DATA_HOME": "/tmp/helm-data",
        },
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def render(helm_bin: str, *args: str, namespace: str = "mail") -> list[dict[str, Any]]:
    out = helm(helm_bin, "template", "rel", str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {[d['metadata']['name'] for d in find(docs, kind)]}"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "Job")
    ]


@pytest.fixture(scope="module")
def default_docs(helm_bin: str) -> list[dict[str, Any]]:
    return render(helm_bin)


@pytest.fixture(scope="module")
def full_docs(helm_bin: str) -> list[dict[str, Any]]:
    return render(helm_bin, "-f", str(FULL_VALUES))


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == "0.1.0"


@pytest.mark.parametrize(
    "extra",
    [[], ["--strict"], ["--strict", "-f", str(FULL_VALUES)]],
    ids=["default", "strict", "strict-full"],
)
def test_helm_lint_is_clean(helm_bin: str, extra: list[str]) -> None:
    proc = helm(helm_bin, "lint", str(CHART), *extra, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("values", EXAMPLE_VALUES, ids=[p.name for p in EXAMPLE_VALUES])
def test_example_values_lint_and_render(helm_bin: str, values: Path) -> None:
    proc = helm(helm_bin, "lint", "--strict", str(CHART), "-f", str(values), check=False)
    assert proc.returncode == 0 and "[WARNING]" not in proc.stdout, proc.stdout + proc.stderr
    assert find(render(helm_bin, "-f", str(values)), "Deployment", "rel-emailplan-operator")


def test_chart_crd_is_the_repository_crd() -> None:
    repo_crd = REPO / "crds" / "emailplan.yaml"
    chart_crd = CHART / "crds" / "emailplan.yaml"
    assert repo_crd.exists(), "crds/emailplan.yaml is missing"
    assert chart_crd.read_bytes() == repo_crd.read_bytes(), (
        "charts/emailplan/crds/emailplan.yaml differs from crds/emailplan.yaml: "
        "cp crds/emailplan.yaml charts/emailplan/crds/emailplan.yaml"
    )


def test_default_render_has_the_whole_product(default_docs: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in default_docs}
    for expected in [
        ("Deployment", "rel-emailplan-operator"),
        ("Deployment", "rel-emailplan-api"),
        ("Service", "rel-emailplan-api"),
        ("ServiceAccount", "rel-emailplan-operator"),
        ("ServiceAccount", "rel-emailplan-dataplane"),
        ("PodDisruptionBudget", "rel-emailplan-operator"),
        ("ClusterRole", "rel-emailplan-operator"),
        ("ClusterRoleBinding", "rel-emailplan-operator"),
        ("ClusterKopfPeering", "rel-emailplan"),
        ("ConfigMap", "rel-emailplan-dataplane"),
        ("Job", "rel-emailplan-migrate-1"),
    ]:
        assert expected in kinds, f"{expected} not rendered"
    assert not find(default_docs, "Ingress") and not find(default_docs, "ServiceMonitor")
    assert not find(default_docs, "Secret"), "the chart never creates Secrets; they are referenced"
    assert not find(default_docs, "Role"), "default is cluster-wide"


def test_operator_runs_two_peered_replicas_with_liveness(default_docs: list[dict[str, Any]]) -> None:
    dep = one(default_docs, "Deployment", "rel-emailplan-operator")
    assert dep["spec"]["replicas"] == 2
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "operator"
    assert "--peering=rel-emailplan" in container["args"]
    assert "--standalone" not in container["args"]
    # kopf's own liveness endpoint by default (`emailplan operator --liveness=URL`).
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    pdb = one(default_docs, "PodDisruptionBudget", "rel-emailplan-operator")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_metrics_port_liveness_when_kopf_liveness_is_off(helm_bin: str) -> None:
    docs = render(helm_bin, "--set", "operator.kopfLiveness=false")
    container = one(docs, "Deployment", "rel-emailplan-operator")["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["tcpSocket"]["port"] == "metrics"
    assert not any(a.startswith("--liveness") for a in container["args"])


def test_operator_gets_sender_settings_and_only_its_own_secrets(default_docs: list[dict[str, Any]]) -> None:
    container = one(default_docs, "Deployment", "rel-emailplan-operator")["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = env_of(container)
    assert env["EMAILPLAN_API_URL"] == "http://rel-emailplan-api.mail.svc:80"
    assert env["EMAILPLAN_SENDER_IMAGE"] == "ghcr.io/emailplan/emailplan:0.1.0"
    assert env["EMAILPLAN_SENDER_SECRET_NAME"] == "emailplan-database,emailplan-token-key"
    assert env["EMAILPLAN_SENDER_CONFIG_MAP_NAME"] == "rel-emailplan-dataplane"
    assert env["EMAILPLAN_SENDER_SERVICE_ACCOUNT"] == "rel-emailplan-dataplane"
    assert env["EMAILPLAN_DEFAULT_PER_POD_RATE"] == "14"
    # The plan defaults the operator owns (spec.safety, spec.senders have no CRD defaults).
    assert env["EMAILPLAN_DEFAULT_MAX_REPLICAS"] == "4"
    assert env["EMAILPLAN_DEFAULT_MAX_BOUNCE_RATE"] == "0.05"
    assert env["EMAILPLAN_DEFAULT_MAX_COMPLAINT_RATE"] == "0.001"
    assert env["EMAILPLAN_SENDER_MEMORY_LIMIT"] == "512Mi"
    assert float(env["EMAILPLAN_DELETION_TIMEOUT_SECONDS"]) == (
        OperatorSettings.model_fields["deletion_timeout_seconds"].default
    )
    assert "EMAILPLAN_SENDER_CPU_LIMIT" not in env, "no CPU limit by default"
    assert env["EMAILPLAN_API_KEY"] == {
        "secretKeyRef": {"name": "emailplan-api-key", "key": "EMAILPLAN_API_KEY"}
    }
    assert "EMAILPLAN_DATABASE_URL" not in env and "EMAILPLAN_TOKEN_KEY" not in env, (
        "control plane has no SQL"
    )
    assert "envFrom" not in container


def test_api_has_probes_service_and_secret_references(default_docs: list[dict[str, Any]]) -> None:
    dep = one(default_docs, "Deployment", "rel-emailplan-api")
    spec = dep["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["args"][0] == "api"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = env_of(container)
    for name, secret in [
        ("EMAILPLAN_DATABASE_URL", "emailplan-database"),
        ("EMAILPLAN_TOKEN_KEY", "emailplan-token-key"),
        ("EMAILPLAN_API_KEY", "emailplan-api-key"),
    ]:
        assert env[name]["secretKeyRef"] == {"name": secret, "key": name}
    assert "AWS_ACCESS_KEY_ID" not in env, "no static AWS keys unless secrets.aws is set"
    assert spec["serviceAccountName"] == "rel-emailplan-dataplane"
    assert spec["automountServiceAccountToken"] is False
    svc = one(default_docs, "Service", "rel-emailplan-api")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(default_docs: list[dict[str, Any]]) -> None:
    job = one(default_docs, "Job", "rel-emailplan-migrate-1")
    assert set(job["metadata"]["annotations"]["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["db", "upgrade"]
    assert env_of(container)["EMAILPLAN_DATABASE_URL"]["secretKeyRef"]["name"] == "emailplan-database"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("which", ["default", "full"])
def test_every_pod_is_locked_down(
    which: str, default_docs: list[dict[str, Any]], full_docs: list[dict[str, Any]]
) -> None:
    docs = default_docs if which == "default" else full_docs
    specs = pod_specs(docs)
    assert len(specs) == 3
    for name, spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 1000, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            csc = container["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True, name
            assert csc["allowPrivilegeEscalation"] is False, name
            assert csc["capabilities"] == {"drop": ["ALL"]}, name
            assert container["resources"]["requests"]["memory"], name
            assert container["resources"]["limits"]["memory"], name
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), f"{name}: writable /tmp"


def _rules(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{d['kind']}/{d['metadata'].get('namespace', '')}/{d['metadata']['name']}", r)
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        for r in d["rules"]
    ]


@pytest.mark.parametrize("which", ["default", "full"])
def test_operator_rbac_never_touches_secrets_or_wildcards(
    which: str, default_docs: list[dict[str, Any]], full_docs: list[dict[str, Any]]
) -> None:
    docs = default_docs if which == "default" else full_docs
    rules = _rules(docs)
    assert rules
    for where, rule in rules:
        assert "secrets" not in rule["resources"], f"{where} grants access to Secrets"
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], (
            where
        )
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), where
        assert not {"pods", "pods/exec", "serviceaccounts/token"} & set(rule["resources"]), where
        if "emailplans" in rule["resources"]:
            assert not {"create", "delete", "deletecollection"} & set(rule["verbs"]), (
                "the operator never creates plans"
            )
        if "configmaps" in rule["resources"]:
            assert set(rule["verbs"]) == {"get", "list", "watch"}


def test_namespaced_mode_uses_roles_only_in_watched_namespaces(full_docs: list[dict[str, Any]]) -> None:
    roles = find(full_docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["marketing", "newsletters"]
    bindings = find(full_docs, "RoleBinding")
    assert {b["subjects"][0]["namespace"] for b in bindings} == {"mail"}
    cluster_roles = find(full_docs, "ClusterRole")
    assert [c["metadata"]["name"] for c in cluster_roles] == ["rel-emailplan-operator-discovery"]
    cluster_resources = {res for c in cluster_roles for r in c["rules"] for res in r["resources"]}
    assert cluster_resources == {"customresourcedefinitions", "namespaces"}, "only discovery is cluster-wide"
    for rule in (r for c in cluster_roles for r in c["rules"]):
        assert set(rule["verbs"]) == {"list", "watch"}, rule
    peerings = find(full_docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["marketing", "newsletters"]
    assert {p["metadata"]["name"] for p in peerings} == {"mail-operator"}
    args = one(full_docs, "Deployment", "rel-emailplan-operator")["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert "--namespace=marketing" in args and "--namespace=newsletters" in args
    assert "--peering=mail-operator" in args


def test_full_values_render_every_option(full_docs: list[dict[str, Any]]) -> None:
    # Sender pods run in their plan's namespace: account and settings are there too.
    for kind, name in [("ServiceAccount", "mail-sender"), ("ConfigMap", "rel-emailplan-dataplane")]:
        found = find(full_docs, kind, name)
        assert sorted(d["metadata"]["namespace"] for d in found) == ["mail", "marketing", "newsletters"], kind
    sa = find(full_docs, "ServiceAccount", "mail-sender")[0]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == (
        "arn:aws:iam::123456789012:role/emailplan-sender"
    )
    assert sa["metadata"]["annotations"]["team"] == "growth"
    assert sa["automountServiceAccountToken"] is False
    ingress = one(full_docs, "Ingress", "rel-emailplan-public")
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == ["/v1/events", "/v1/unsubscribe"], "only public paths are exposed"
    assert ingress["spec"]["tls"][0]["secretName"] == "mail-example-com-tls"
    monitor = one(full_docs, "ServiceMonitor", "rel-emailplan")
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"http", "metrics"}
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    op = one(full_docs, "Deployment", "rel-emailplan-operator")["spec"]["template"]["spec"]
    env = env_of(op["containers"][0])
    assert env["EMAILPLAN_SENDER_SECRET_NAME"] == "mail-database,mail-tokens,mail-aws,mail-sentry"
    assert json.loads(env["EMAILPLAN_SENDER_ENV"]) == {"EMAILPLAN_WORKER_CONCURRENCY": "48"}
    assert env["EMAILPLAN_SENDER_IMAGE"] == "registry.example.com/platform/emailplan:0.1.0"
    assert env["EMAILPLAN_SENDER_SERVICE_ACCOUNT"] == "mail-sender"
    assert env["EMAILPLAN_SENTRY_DSN"]["secretKeyRef"]["name"] == "mail-sentry"
    assert env["TZ"] == "UTC"
    assert op["tolerations"][0]["key"] == "dedicated"
    assert op["imagePullSecrets"] == [{"name": "registry-credentials"}]
    api = one(full_docs, "Deployment", "rel-emailplan-api")
    assert api["spec"]["replicas"] == 3
    api_env = env_of(api["spec"]["template"]["spec"]["containers"][0])
    assert api_env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "mail-aws"
    assert json.loads(api_env["EMAILPLAN_SNS_TOPIC_ARNS"]) == [
        "arn:aws:sns:eu-west-1:123456789012:ses-events"
    ]
    config = find(full_docs, "ConfigMap", "rel-emailplan-dataplane")[0]["data"]
    assert config["EMAILPLAN_PUBLIC_URL"] == "https://mail.example.com"
    assert config["AWS_REGION"] == "eu-west-1"
    assert one(full_docs, "PodDisruptionBudget", "rel-emailplan-api")["spec"]["minAvailable"] == 2


def test_public_url_defaults_to_the_ingress_host(helm_bin: str) -> None:
    docs = render(helm_bin, "--set", "ingress.enabled=true", "--set", "ingress.hosts[0]=t.example.org")
    assert (
        one(docs, "ConfigMap", "rel-emailplan-dataplane")["data"]["EMAILPLAN_PUBLIC_URL"]
        == "https://t.example.org"
    )


def test_single_replica_without_peering_runs_standalone(helm_bin: str) -> None:
    docs = render(helm_bin, "--set", "operator.replicas=1", "--set", "operator.peering.create=false")
    args = one(docs, "Deployment", "rel-emailplan-operator")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--standalone" in args
    assert not find(docs, "PodDisruptionBudget", "rel-emailplan-operator"), (
        "a PDB on one replica blocks drains"
    )
    assert not find(docs, "ClusterKopfPeering")


BAD_VALUES = [
    ("operator:\n  deletionTimeoutSeconds: -1\n", ["deletionTimeoutSeconds"]),
    # (values file content, words the error must contain)
    ("operator:\n  replicas: two\n", ["operator", "replicas"]),
    ("operator:\n  replicas: 0\n", ["operator", "replicas"]),
    ("image:\n  pullPolicy: Sometimes\n", ["pullPolicy"]),
    ("operater:\n  replicas: 2\n", ["operater"]),
    ("api:\n  replicaCount: 2\n", ["replicaCount"]),
    ("watchNamespaces: [Mail_Team]\n", ["watchNamespaces"]),
    ("secrets:\n  database:\n    existingSecret: ''\n", ["secrets", "database", "existingSecret"]),
    ("sender:\n  perPodRate: -1\n", ["sender", "perPodRate"]),
    ("sender:\n  maxBounceRate: 5\n", ["maxBounceRate"]),
    ("aws:\n  region: Europe\n", ["aws", "region"]),
    ("dataPlaneServiceAccount:\n  irsaRoleArn: my-role\n", ["irsaRoleArn"]),
    ("ingress:\n  enabled: true\n", ["ingress", "hosts"]),
    ("ingress:\n  enabled: true\n  hosts: [a.example.com]\n  paths: [/v1/plans]\n", ["ingress", "paths"]),
    ("operator:\n  resources:\n    requests:\n      memory: lots\n", ["memory"]),
    ("podSecurityContext:\n  runAsNonRoot: false\n", ["runAsNonRoot"]),
]


@pytest.mark.parametrize(
    ("content", "words"), BAD_VALUES, ids=[w[-1] + str(i) for i, (_, w) in enumerate(BAD_VALUES)]
)
def test_schema_refuses_bad_values_naming_the_field(
    helm_bin: str, tmp_path: Path, content: str, words: list[str]
) -> None:
    values = tmp_path / "bad.yaml"
    values.write_text(content)
    proc = helm(helm_bin, "template", "rel", str(CHART), "-f", str(values), check=False)
    assert proc.returncode != 0, f"accepted bad values:\n{content}"
    message = proc.stderr
    assert "values don't meet the specifications of the schema" in message, message
    for word in words:
        assert word in message, f"error does not name {word!r}:\n{message}"


@pytest.mark.parametrize(
    "sets",
    [
        [
            "operator.rbac.create=false",
            "operator.serviceAccount.create=false",
            "operator.serviceAccount.name=ops",
        ],
        ["dataPlaneServiceAccount.create=false", "dataPlaneServiceAccount.name=shared"],
        ["migrations.enabled=false", "api.podDisruptionBudget.enabled=false", "api.replicas=1"],
        ["image.digest=sha256:" + "a" * 64, "fullnameOverride=mail"],
    ],
    ids=["no-rbac", "own-dataplane-sa", "no-hooks", "digest"],
)
def test_switches_render_consistently(helm_bin: str, sets: list[str]) -> None:
    args = [x for s in sets for x in ("--set", s)]
    docs = render(helm_bin, *args)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    deployments = find(docs, "Deployment")
    assert len(deployments) == 2
    if "operator.rbac.create=false" in sets:
        assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
        assert not find(docs, "ServiceAccount", "ops")
        op_spec = one(docs, "Deployment", "rel-emailplan-operator")["spec"]["template"]["spec"]
        assert op_spec["serviceAccountName"] == "ops"
    if "dataPlaneServiceAccount.create=false" in sets:
        assert ("ServiceAccount", "shared") not in names
        api = one(docs, "Deployment", "rel-emailplan-api")
        assert api["spec"]["template"]["spec"]["serviceAccountName"] == "shared"
    if "migrations.enabled=false" in sets:
        assert not find(docs, "Job") and not find(docs, "PodDisruptionBudget", "rel-emailplan-api")
    if "fullnameOverride=mail" in sets:
        op = one(docs, "Deployment", "mail-operator")["spec"]["template"]["spec"]["containers"][0]
        assert op["image"] == "ghcr.io/emailplan/emailplan@sha256:" + "a" * 64
        assert env_of(op)["EMAILPLAN_SENDER_IMAGE"] == op["image"], "sender pods run the same pinned image"


def test_pull_secrets_reach_the_sender_pods_through_the_operator(helm_bin: str) -> None:
    docs = render(helm_bin, "--set", "imagePullSecrets={regcred,mirror}")
    pod = one(docs, "Deployment", "rel-emailplan-operator")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["EMAILPLAN_SENDER_IMAGE_PULL_SECRETS"] == "regcred,mirror"
    assert env["EMAILPLAN_PEERING_LIFETIME_SECONDS"] == "60"


# --- shipped observability: Grafana dashboard, PrometheusRule, sender PodMonitor ------------------

OBSERVABILITY = [
    "--set",
    "grafanaDashboard.enabled=true",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "serviceMonitor.enabled=true",
]
ALERTS_IN_OPERATIONS_MD = {
    "EmailplanSesSendingPaused": "emailplan_sender_paused_by_ses",
    "EmailplanSendFailures": "emailplan_sender_failed_total",
    "EmailplanSesThrottling": "emailplan_sender_throttle_factor",
    "EmailplanBacklogNotMoving": "emailplan_sender_queue_visible",
    "EmailplanSnsRefused": "emailplan_api_sns_messages_total",
    "EmailplanPlanFailed": "emailplan_operator_plans",
}


@pytest.fixture(scope="module")
def observability_docs(helm_bin: str) -> list[dict[str, Any]]:
    return render(helm_bin, *OBSERVABILITY)


def exported_metrics() -> dict[str, set[str]]:
    """Every metric the processes export (name as scraped -> its label names)."""
    import importlib

    from prometheus_client import REGISTRY

    for module in ("emailplan.sender.worker", "emailplan.sender.api.app", "emailplan.operator.metrics"):
        importlib.import_module(module)
    out: dict[str, set[str]] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    names = getattr(REGISTRY, "_names_to_collectors", {})
    for name, collector in names.items():
        out.setdefault(name, set()).update(getattr(collector, "_labelnames", ()))
    return out


def promql_uses(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names in its selector) for every emailplan metric an expression reads."""
    import re

    found = []
    for m in re.finditer(r"(emailplan_[a-z_]+)(\{([^}]*)\})?", expr):
        labels = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", m.group(3) or ""))
        found.append((m.group(1), labels))
    return found


def dashboard_exprs(docs: list[dict[str, Any]]) -> list[str]:
    cm = one(docs, "ConfigMap", "rel-emailplan-dashboard")
    dash = json.loads(cm["data"]["emailplan.json"])
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def rule_exprs(docs: list[dict[str, Any]]) -> dict[str, str]:
    rule = one(docs, "PrometheusRule", "rel-emailplan")
    return {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}


def test_observability_is_off_by_default(default_docs: list[dict[str, Any]]) -> None:
    kinds = {d["kind"] for d in default_docs}
    assert not kinds & {"PrometheusRule", "PodMonitor", "ServiceMonitor"}
    assert not find(default_docs, "ConfigMap", "rel-emailplan-dashboard")


def test_dashboard_is_a_sidecar_configmap_with_the_campaign_panels(
    observability_docs: list[dict[str, Any]], helm_bin: str
) -> None:
    cm = one(observability_docs, "ConfigMap", "rel-emailplan-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["emailplan.json"])
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for words in ("sends per second", "failures", "opens", "bounce rate", "complaint rate"):
        assert words in titles, titles
    per_plan = [e for e in dashboard_exprs(observability_docs) if "by (namespace, plan" in e]
    assert any("emailplan_sender_sent_total" in e for e in per_plan)
    assert any("emailplan_sender_failed_total" in e for e in per_plan)
    # Labels and annotations are the user's to change (another sidecar label, a folder).
    docs = render(
        helm_bin,
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "grafanaDashboard.annotations.grafana_folder=Email",
    )
    assert one(docs, "ConfigMap", "rel-emailplan-dashboard")["metadata"]["annotations"] == {
        "grafana_folder": "Email"
    }


def test_prometheus_rule_has_the_alerts_operations_md_lists(
    observability_docs: list[dict[str, Any]], helm_bin: str
) -> None:
    exprs = rule_exprs(observability_docs)
    assert set(exprs) == set(ALERTS_IN_OPERATIONS_MD)
    operations = (REPO / "docs" / "operations.md").read_text()
    for alert, metric in ALERTS_IN_OPERATIONS_MD.items():
        assert metric in exprs[alert]
        assert metric in operations and alert in operations, f"{alert} not documented"
    rule = one(observability_docs, "PrometheusRule", "rel-emailplan")
    annotations = [r["annotations"]["summary"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert any("{{ $labels.plan }}" in a for a in annotations), "Prometheus templates must survive helm"
    assert "* 60 > 3" in exprs["EmailplanSendFailures"]
    docs = render(
        helm_bin, "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.failuresPerMinute=10"
    )
    assert "* 60 > 10" in rule_exprs(docs)["EmailplanSendFailures"]


def test_every_metric_the_dashboard_and_alerts_read_is_exported(
    observability_docs: list[dict[str, Any]],
) -> None:
    exported = exported_metrics()
    relabelled = {"namespace", "plan"}  # added by the PodMonitor from the sender pods' labels
    exprs = dashboard_exprs(observability_docs) + list(rule_exprs(observability_docs).values())
    for expr in exprs:
        for name, labels in promql_uses(expr):
            assert name in exported, f"{name} (in {expr!r}) is not exported by any process"
            assert labels <= exported[name] | relabelled, f"{name} has no label {labels - exported[name]}"


def test_sender_pods_are_scraped_with_the_plan_label(observability_docs: list[dict[str, Any]]) -> None:
    pm = one(observability_docs, "PodMonitor", "rel-emailplan-senders")
    assert pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "sender"
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    relabel = pm["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
        "targetLabel": "plan",
    } in relabel


@pytest.mark.parametrize(
    "content",
    [
        "grafanaDashboard:\n  enabled: yes-please\n",
        "grafanaDashboard:\n  sidecarLabel: x\n",
        "prometheusRule:\n  failuresPerMinute: -1\n",
        "prometheusRule:\n  throttleFactorBelow: 2\n",
    ],
)
def test_schema_checks_the_observability_values(helm_bin: str, tmp_path: Path, content: str) -> None:
    values = tmp_path / "bad.yaml"
    values.write_text(content)
    proc = helm(helm_bin, "template", "rel", str(CHART), "-f", str(values), check=False)
    assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr
    assert content.split(":")[0] in proc.stderr


def test_lint_with_observability_on(helm_bin: str) -> None:
    proc = helm(helm_bin, "lint", str(CHART), "--strict", *OBSERVABILITY)
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


def test_set_breaker_defaults_change_what_a_new_plan_is_judged_by(
    helm_bin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: `--set sender.maxBounceRate` reaches a plan that says nothing (no CRD default hides it)."""
    docs = render(
        helm_bin,
        "--set",
        "sender.maxBounceRate=0.02",
        "--set",
        "sender.maxComplaintRate=0.0005",
        "--set",
        "sender.maxReplicas=7",
    )
    container = one(docs, "Deployment", "rel-emailplan-operator")["spec"]["template"]["spec"]["containers"][0]
    for name, value in env_of(container).items():
        if name.startswith("EMAILPLAN_DEFAULT_"):
            monkeypatch.setenv(name, value)
    silent = {k: v for k, v in MINIMAL_SPEC.items() if k != "senders"}  # says nothing of what is set
    spec = read_spec(silent, OperatorSettings(dev_mode=True))
    assert (spec.max_bounce_rate, spec.max_complaint_rate, spec.max_replicas) == (0.02, 0.0005, 7)
    for bad in ("lots", "1.5"):
        proc = helm(
            helm_bin, "template", "rel", str(CHART), "--set", f"sender.maxBounceRate={bad}", check=False
        )
        assert proc.returncode != 0 and "maxBounceRate" in proc.stderr, proc.stderr


NO_PEERING = ("--set", "operator.replicas=1", "--set", "operator.peering.create=false")


@pytest.fixture
def notes(helm_bin: str, crd_installed: KubeCluster) -> Callable[..., str]:
    """The text `helm install` prints after installing (NOTES.txt); a dry run against the local
    control plane (helm asks a cluster for its capabilities even then)."""

    def render_notes(*args: str) -> str:
        proc = subprocess.run(
            # No peering object: the kopf peering CRD is not on the local control plane.
            [helm_bin, "install", "rel", str(CHART), "-n", "mail", "--dry-run=client", *NO_PEERING, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": "/tmp",
                "KUBECONFIG": str(crd_installed.kubeconfig),
                "HELM_CACHE_HOME": "/tmp/helm-cache",
                "HELM_CONFIG_HOME": "/tmp/helm-config",
                "HELM_DATA_HOME": "/tmp/helm-data",
            },
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout.split("NOTES:", 1)[1]

    return render_notes


@pytest.mark.parametrize(
    ("values", "secrets"),
    [
        ([], ["emailplan-database", "emailplan-token-key", "emailplan-api-key"]),
        (
            ["-f", str(CHART / "ci" / "values-local.yaml")],
            ["emailplan-database", "emailplan-token-key", "emailplan-api-key", "emailplan-aws"],
        ),
    ],
)
@pytest.mark.kube
def test_notes_give_a_command_for_every_secret_the_pods_read(
    notes: Callable[..., str], values: list[str], secrets: list[str]
) -> None:
    """A pod whose Secret is missing stays in CreateContainerConfigError: the notes list each one
    with the command that creates it, in the release namespace."""
    text = notes(*values)
    for name in secrets:
        assert f"kubectl -n mail create secret generic {name} " in text, (name, text)
    assert ("AWS_ACCESS_KEY_ID=" in text) == ("emailplan-aws" in secrets)


@pytest.mark.kube
def test_notes_say_how_to_reach_the_api_from_a_shell(notes: Callable[..., str]) -> None:
    """The in-cluster address needs cluster DNS or a Pod; kubectl port-forward works from anywhere."""
    text = notes("-f", str(CHART / "ci" / "values-local.yaml"))
    assert "kubectl -n mail port-forward svc/rel-emailplan-api 8080:80" in text, text
    assert "export EMAILPLAN_API_URL=http://127.0.0.1:8080" in text
    assert "get secret emailplan-api-key -o jsonpath='{.data.EMAILPLAN_API_KEY}' | base64 -d" in text
