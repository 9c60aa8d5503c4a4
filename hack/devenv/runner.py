"""A local stand-in for kubelets: runs sender Deployments as local processes.

The local control plane has no nodes, so nothing would ever run the pods the
operator asks for. This runner watches Deployments labelled
``app.kubernetes.io/component=sender`` and, for each, keeps ``spec.replicas``
local processes running the pod template's command with its environment
(``value``, ``valueFrom`` secret/configMap keys and ``envFrom`` resolved through the
API), restarts processes that die, stops extras when replicas go down, stops all
when the Deployment goes, and reports ``replicas``/``readyReplicas``/
``availableReplicas`` in the Deployment's status like a kubelet + controller would.

Extra environment given to the runner overlays the pod's (point the worker at
local PostgreSQL and moto), and ``--command-map`` replaces a command (e.g.
``emailplan`` by the venv's binary). Nothing in the ``emailplan`` package knows this exists.

    python hack/devenv/runner.py --kubeconfig KUBECONFIG [--env K=V ...] [--command-map emailplan=/path]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `devenv` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kubernetes
from kubernetes.client.exceptions import ApiException

from devenv.procs import spawn, stop

log = logging.getLogger("devenv.runner")
SELECTOR = "app.kubernetes.io/component=sender"


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    started: float
    restarts: int = 0


@dataclass
class Workload:
    """The processes of one Deployment."""

    namespace: str
    name: str
    template_hash: str = ""
    replicas: list[Replica] = field(default_factory=list)
    reported: dict[str, int] = field(default_factory=dict)
    serial: int = 0


class PodRunner:
    """Reconcile local processes against sender Deployments, every ``interval`` seconds."""

    def __init__(
        self,
        kubeconfig: str | Path,
        *,
        extra_env: dict[str, str] | None = None,
        command_map: dict[str, str] | None = None,
        log_dir: str | Path | None = None,
        interval: float = 0.5,
    ) -> None:
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.extra_env = dict(extra_env or {})
        self.command_map = dict(command_map or {})
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="emailplan-runner-"))
        self.interval = interval
        self.workloads: dict[tuple[str, str], Workload] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> PodRunner:
        """Run in a background thread (tests); ``stop()`` ends it and every process."""
        self._thread = threading.Thread(target=self.run, name="pod-runner", daemon=True)
        self._thread.start()
        return self

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:
                log.exception("runner sync failed")
            self._stop.wait(self.interval)
        for wl in list(self.workloads.values()):
            self._scale(wl, 0, [], {})
        self.workloads.clear()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def processes(self, namespace: str, name: str) -> list[subprocess.Popen[bytes]]:
        wl = self.workloads.get((namespace, name))
        return [r.proc for r in wl.replicas] if wl else []

    # --- reconcile -----------------------------------------------------------------------------------

    def sync(self) -> None:
        deployments = self.apps.list_deployment_for_all_namespaces(label_selector=SELECTOR).items
        seen: set[tuple[str, str]] = set()
        for dep in deployments:
            key = (dep.metadata.namespace, dep.metadata.name)
            if dep.metadata.deletion_timestamp:
                continue
            seen.add(key)
            wl = self.workloads.setdefault(key, Workload(*key))
            template = kubernetes.client.ApiClient().sanitize_for_serialization(dep.spec.template)
            container = template["spec"]["containers"][0]
            argv = [*container.get("command", []), *container.get("args", [])]
            if argv and argv[0] in self.command_map:
                argv[0] = self.command_map[argv[0]]
            env = self._resolve_env(dep.metadata.namespace, container)
            digest = hashlib.sha256(json.dumps([argv, env], sort_keys=True).encode()).hexdigest()
            if wl.template_hash and digest != wl.template_hash:
                log.info("pod template changed, restarting", extra={"deployment": key})
                self._scale(wl, 0, argv, env)
            wl.template_hash = digest
            self._scale(wl, int(dep.spec.replicas or 0), argv, env)
            self._report(wl, dep.metadata.generation)
        for key in list(self.workloads):
            if key not in seen:
                log.info("deployment gone, stopping its processes", extra={"deployment": key})
                # Forget the workload only once its processes have exited: until then they may
                # still be finishing sends and flushing results, and ``processes()`` must show them.
                self._scale(self.workloads[key], 0, [], {})
                del self.workloads[key]

    def _scale(self, wl: Workload, desired: int, argv: list[str], env: dict[str, str]) -> None:
        for rep in wl.replicas:  # restart the dead (a kubelet's restartPolicy: Always)
            if rep.proc.poll() is not None and desired > 0:
                log.info(
                    "process exited, restarting", extra={"deployment": wl.name, "code": rep.proc.returncode}
                )
                rep.proc = self._spawn(wl, argv, env)
                rep.started = time.monotonic()
                rep.restarts += 1
        while len(wl.replicas) > desired:
            stop(wl.replicas[-1].proc, timeout=30)  # listed until it has exited, like a terminating pod
            wl.replicas.pop()
        while len(wl.replicas) < desired:
            wl.replicas.append(Replica(self._spawn(wl, argv, env), time.monotonic()))

    def _spawn(self, wl: Workload, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        wl.serial += 1
        log_path = self.log_dir / f"{wl.namespace}_{wl.name}_{wl.serial}.log"
        full_env = {**os.environ, **env, **self.extra_env}
        return spawn(argv, log_path, env=full_env)

    def _report(self, wl: Workload, generation: int | None) -> None:
        running = sum(1 for r in wl.replicas if r.proc.poll() is None)
        status = {
            "replicas": len(wl.replicas),
            "readyReplicas": running,
            "availableReplicas": running,
            "updatedReplicas": len(wl.replicas),
            "observedGeneration": generation or 0,
        }
        if status == wl.reported:
            return
        try:
            self.apps.patch_namespaced_deployment_status(wl.name, wl.namespace, {"status": status})
            wl.reported = status
        except ApiException as exc:
            if exc.status != 404:
                raise

    # --- environment ---------------------------------------------------------------------------------

    def _resolve_env(self, namespace: str, container: dict[str, Any]) -> dict[str, str]:
        """The container's environment as a kubelet would build it: envFrom first, then env."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                data = self._secret(
                    namespace,
                    source["secretRef"]["name"],
                    optional=source["secretRef"].get("optional", False),
                )
            else:
                data = self._config_map(
                    namespace,
                    source["configMapRef"]["name"],
                    optional=source["configMapRef"].get("optional", False),
                )
            env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = item.get("valueFrom", {})
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                value = self._secret(namespace, r["name"], optional=r.get("optional", False)).get(r["key"])
            elif "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                value = self._config_map(namespace, r["name"], optional=r.get("optional", False)).get(
                    r["key"]
                )
            else:
                value = None  # fieldRef/resourceFieldRef: not needed by our pods
            if value is not None:
                env[item["name"]] = value
        return env

    def _secret(self, namespace: str, name: str, *, optional: bool) -> dict[str, str]:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _config_map(self, namespace: str, name: str, *, optional: bool) -> dict[str, str]:
        try:
            cm = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise
        return dict(cm.data or {})


def _pairs(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run sender Deployments of a local control plane "
        "as local processes (a stand-in for kubelets)."
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every process (overrides the pod's)",
    )
    parser.add_argument(
        "--command-map",
        action="append",
        default=[],
        metavar="CMD=PATH",
        help="replace a container command, e.g. emailplan=.venv/bin/emailplan",
    )
    parser.add_argument("--log-dir", default=None, help="where process logs go (default: a temp dir)")
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runner = PodRunner(
        args.kubeconfig,
        extra_env=_pairs(args.env),
        command_map=_pairs(args.command_map),
        log_dir=args.log_dir,
        interval=args.interval,
    )
    signal.signal(signal.SIGTERM, lambda *_: runner._stop.set())
    log.info("runner started; process logs in %s", runner.log_dir)
    try:
        runner.run()
    except KeyboardInterrupt:
        runner._stop.set()
        runner.run()  # stops every process, then returns at once
    return 0


if __name__ == "__main__":
    sys.exit(main())
