"""The whole product on loopback: one launcher shared by the demo, the e2e tests and the benchmarks.

``LocalStack`` starts (or reuses) PostgreSQL, moto as SES/SQS/SNS/S3 and the Kubernetes
control plane, creates and migrates a database with ``emailplan db upgrade``, installs the
EmailPlan CRD, verifies the sending domain in SES, and runs the real processes: ``emailplan
api``, the local pod runner (which runs each sender Pod as a real ``emailplan worker``) and
``emailplan operator``. The API trusts a local SNS signing identity (``devenv.sns``), so
callers can post SES notifications through the real signed path. ``stop()`` stops what
the stack started, in reverse order, also after a failure half-way.

The helpers below look at the result the way a user would: the plan's status through
kubectl, its Events, the Deployment, the mail SES received, the counts from the API.
"""

from __future__ import annotations

import email.utils
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devenv import sesaccount
from devenv.kube import KubeCluster
from devenv.moto import CREDENTIALS, MotoServer
from devenv.ports import free_port, port_open, wait_for
from devenv.postgres import PostgresServer, pg_bin
from devenv.procs import spawn, stop
from devenv.runner import PodRunner
from devenv.sns import CertServer, Identity, make_identity, notification
from emailplan.contract.httpapi import PLAN_COUNTS, SNS_RESULT, SUPPRESSIONS

VENV_BIN = Path(sys.executable).parent
EMAILPLAN = str(VENV_BIN / "emailplan")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class StackOptions:
    """What differs between the demo, the tests and the benchmarks."""

    api_key: str = field(default_factory=lambda: "local-" + uuid.uuid4().hex[:12])
    status_interval_seconds: float = 1.0
    # Extra environment of the data plane (API and sender pods) and of the operator.
    data_env: dict[str, str] = field(default_factory=dict)
    operator_env: dict[str, str] = field(default_factory=dict)
    operator_namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    start_operator: bool = True


class LocalStack:
    """The running parts, with helpers to look at them like a user would."""

    def __init__(
        self,
        base: Path | None = None,
        options: StackOptions | None = None,
        *,
        postgres: PostgresServer | None = None,
        moto: MotoServer | None = None,
        kube: KubeCluster | None = None,
    ) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="emailplan-stack-"))
        self.options = options or StackOptions()
        self._postgres, self._moto, self._kube = postgres, moto, kube
        self._stack = ExitStack()
        self.api_port = free_port()
        self.api: subprocess.Popen[bytes] | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.runner: PodRunner | None = None
        self.database = "stack_" + uuid.uuid4().hex[:8]
        self.data_env: dict[str, str] = {}

    # --- starting and stopping --------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        return self.options.api_key

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def account_url(self) -> str:
        """The SES account stub (``PUT {account_url}/_stub/suppressed`` sets the suppression list)."""
        return f"http://127.0.0.1:{self.account_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.kube.kubeconfig

    def start(self, progress: Callable[[str], None] = lambda _: None) -> LocalStack:
        try:
            self._start(progress)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, progress: Callable[[str], None]) -> None:
        progress("starting PostgreSQL 15 (a private cluster)")
        self.postgres: PostgresServer = self._postgres or self._own(PostgresServer().start(), "cleanup")
        progress("starting moto server (SES, SQS, SNS, S3)")
        self.moto: MotoServer = self._moto or self._own(MotoServer().start(), "cleanup")
        progress("starting etcd, kube-apiserver and kube-controller-manager")
        self.kube: KubeCluster = self._kube or self._own(KubeCluster().start(), "cleanup")
        self.kube.install_crd()
        self.ident: Identity = make_identity()
        self._stack.callback(shutil.rmtree, self.ident.dir, True)  # SNS's stand-in private key
        self.certs: CertServer = self._own(CertServer(self.ident).start(), "stop")
        # moto answers neither GetAccount nor ListSuppressedDestinations: the stub does (no quota).
        self.account_port = free_port()
        account = spawn(
            [sys.executable, str(Path(sesaccount.__file__)), str(self.account_port), "unlimited"],
            self.base / "sesaccount.log",
        )
        self._stack.callback(stop, account)
        wait_for(lambda: port_open(self.account_port), 30, "SES account stub")

        subprocess.run(
            [
                pg_bin("createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.postgres.port),
                "-U",
                self.postgres.user,
                self.database,
            ],
            check=True,
            capture_output=True,
        )
        pg = self.postgres
        self.database_url = f"postgresql+asyncpg://{pg.user}@127.0.0.1:{pg.port}/{self.database}"
        self.data_env = {
            **self.moto.env(),
            **self.certs.api_env(),
            "EMAILPLAN_DATABASE_URL": self.database_url,
            "EMAILPLAN_API_KEY": self.api_key,
            "EMAILPLAN_TOKEN_KEY": "local-token-key",
            "EMAILPLAN_PUBLIC_URL": self.api_url,
            "EMAILPLAN_METRICS_PORT": "0",
            # moto's GetSendQuota answers the sandbox rate (1/s): give the account a real cap.
            "EMAILPLAN_MAX_SEND_RATE": "2000",
            "EMAILPLAN_LOG_LEVEL": "INFO",
            "EMAILPLAN_SES_ACCOUNT_ENDPOINT_URL": self.account_url,
            **self.options.data_env,
        }
        progress("migrating the ledger (emailplan db upgrade)")
        subprocess.run(
            [EMAILPLAN, "db", "upgrade"], env={**os.environ, **self.data_env}, check=True, capture_output=True
        )
        self.verify_sender_domain()
        progress(f"starting the data-plane API on {self.api_url}")
        self.start_api()
        progress("starting the local pod runner (sender pods as local processes)")
        self.start_runner()
        if self.options.start_operator:
            progress("starting the operator")
            self.start_operator()

    def _own(self, thing: Any, stop_method: str) -> Any:
        self._stack.callback(getattr(thing, stop_method))
        return thing

    def verify_sender_domain(self, domain: str = "example.com") -> None:
        import boto3

        ses = boto3.client(
            "ses",
            endpoint_url=self.moto.endpoint_url,
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        ses.verify_domain_identity(Domain=domain)

    def start_api(self) -> None:
        self.api = spawn(
            [EMAILPLAN, "api", "--host", "127.0.0.1", "--port", str(self.api_port)],
            self.base / "api.log",
            env={**os.environ, **self.data_env},
        )
        wait_for(lambda: self._alive(self.api, "api.log") and port_open(self.api_port), 60, "emailplan api")

    def operator_env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kube.kubeconfig),
            "EMAILPLAN_API_URL": self.api_url,
            "EMAILPLAN_API_KEY": self.api_key,
            "EMAILPLAN_STATUS_INTERVAL_SECONDS": str(self.options.status_interval_seconds),
            "EMAILPLAN_METRICS_PORT": "0",
            "EMAILPLAN_SENDER_IMAGE": "emailplan:local",
            **self.options.operator_env,
            **extra,
        }

    def start_operator(self) -> None:
        scope = [f"--namespace={ns}" for ns in self.options.operator_namespaces]
        self.operator = spawn(
            [EMAILPLAN, "operator", "--standalone", *scope],
            self.base / "operator.log",
            env=self.operator_env(),
        )

    def kill_operator(self) -> None:
        """SIGKILL: no graceful shutdown, like a node dying."""
        assert self.operator is not None
        os.killpg(self.operator.pid, signal.SIGKILL)
        self.operator.wait(10)
        self.operator = None

    def start_runner(self) -> None:
        self.runner = PodRunner(
            self.kube.kubeconfig,
            extra_env=self.data_env,
            command_map={"emailplan": EMAILPLAN},
            log_dir=self.base / "pods",
        ).start()

    def _alive(self, proc: subprocess.Popen[bytes] | None, log: str) -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{log} process exited: {(self.base / log).read_text()[-3000:]}")
        return True

    def stop(self) -> None:
        if self.runner:
            self.runner.stop()
            self.runner = None
        stop(self.operator)
        stop(self.api)
        self._stack.close()

    # --- looking at things ----------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """kubectl's output; with ``check``, a failure raises with kubectl's own message."""
        done = self.kube.kubectl(*args, input=input, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])} failed: {done.stderr.strip()}")
        return done.stdout

    def plan(self, ns: str, name: str) -> dict[str, Any] | None:
        out = self.kube.kubectl("get", "emailplans.emailplan.io", name, "-n", ns, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def status(self, ns: str, name: str) -> dict[str, Any]:
        plan = self.plan(ns, name)
        return dict((plan or {}).get("status") or {})

    def wait_status(
        self, ns: str, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 240.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status(ns, name)
            if check(last):
                return last
            time.sleep(0.5)
        raise AssertionError(
            f"{what}: not reached in {timeout:.0f}s; last status {json.dumps(last)[:2000]}\n"
            f"operator log tail:\n{self.tail('operator.log')}"
        )

    def tail(self, name: str) -> str:
        path = self.base / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        out = self.kube.kubectl(
            "get", "deployment", f"emailplan-{name}-sender", "-n", ns, "-o", "json", check=False
        )
        return json.loads(out.stdout) if out.returncode == 0 else None

    def events(self, ns: str, name: str) -> list[dict[str, Any]]:
        out = self.kubectl(
            "get",
            "events",
            "-n",
            ns,
            "-o",
            "json",
            "--field-selector",
            f"involvedObject.kind=EmailPlan,involvedObject.name={name}",
        )
        return list(json.loads(out)["items"])

    def running(self, ns: str, name: str) -> int:
        assert self.runner is not None
        return sum(1 for p in self.runner.processes(ns, f"emailplan-{name}-sender") if p.poll() is None)

    def received(self, marker: str = "") -> Counter[str]:
        """Recipients (containing ``marker``) of every email moto accepted, one count per email."""
        got: Counter[str] = Counter()
        for msg in self.moto.sent_emails():
            dests = msg.get("destinations")
            addrs = [a for v in dests.values() for a in v or []] if isinstance(dests, dict) else dests or []
            # moto lists the To header ("Name <addr>") and the envelope address: count each email once.
            for addr in {email.utils.parseaddr(a)[1].lower() for a in addrs}:
                if marker in addr:
                    got[addr] += 1
        return got

    def api_call(self, method: str, path: str, body: Any | None = None) -> Any:
        req = urllib.request.Request(
            self.api_url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"x-api-key": self.api_key, "content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def counts_from_api(self, uid: str) -> dict[str, Any]:
        return dict(self.api_call(PLAN_COUNTS.method, PLAN_COUNTS.url(planId=uid)))

    def suppress(self, emails: list[str], reason: str = "manual") -> None:
        """Put addresses on the suppression list through the administration API."""
        self.api_call(SUPPRESSIONS.method, SUPPRESSIONS.url(), {"emails": emails, "reason": reason})

    def post_sns(self, doc: dict[str, Any]) -> dict[str, Any]:
        """POST one SNS message to the API's result endpoint, as SNS does."""
        req = urllib.request.Request(
            self.api_url + SNS_RESULT.url(),
            data=json.dumps(doc).encode(),
            headers={"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"},
            method=SNS_RESULT.method,
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return dict(json.load(r))

    def ses_notification(self, event: dict[str, Any]) -> dict[str, Any]:
        """An SES event wrapped and signed as SNS delivers it to the API."""
        return notification(self.ident, self.certs.cert_url, event)

    def psql(self, sql: str) -> list[str]:
        pg = self.postgres
        out = subprocess.run(
            [
                pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(pg.port),
                "-U",
                pg.user,
                "-d",
                self.database,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return [line for line in out.stdout.splitlines() if line]
