"""A local stand-in for kubelets: runs sender Pods as local processes.

The local control plane has no nodes and no scheduler, but its controller manager
runs every controller: the operator's sender Deployment gets a ReplicaSet, and the
ReplicaSet gets Pods that nothing would ever run. This runner plays the kubelet for
the Pods labelled ``app.kubernetes.io/component=sender``: for each Pod it starts a
local process with the first container's ``command``/``args`` and environment
(``value``, ``valueFrom`` secret/configMap keys and ``fieldRef`` metadata.name/namespace,
and ``envFrom``, resolved through the API) and patches the Pod's status as a kubelet
would (phase Running, Ready conditions, container status with ``restartCount``). So
the ReplicaSet and Deployment controllers count ready replicas themselves, and
``kubectl get deploy`` / ``kubectl get pods`` tell the truth.

A process that dies is restarted (``restartPolicy: Always``) and its Pod shows it
down meanwhile. The Pods are never bound to a node, so the API removes them at once
when the ReplicaSet scales down or the Deployment goes; the runner then SIGTERMs the
process and SIGKILLs it after the Pod's ``terminationGracePeriodSeconds``. Until
the process has exited, ``processes()`` still lists it, like a terminating pod.

Extra environment given to the runner overlays the pod's (point the worker at
local PostgreSQL and moto), and ``--command-map`` replaces a command (e.g.
``emailplan`` by the venv's binary). Nothing in the ``emailplan`` package knows this exists.

    python hack/devenv/runner.py --kubeconfig KUBECONFIG [--env K=V ...] [--command-map emailplan=/path]
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `devenv` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import kubernetes
from kubernetes.client.exceptions import ApiException

from devenv import reaper
from devenv.procs import spawn

log = logging.getLogger("devenv.runner")
SELECTOR = "app.kubernetes.io/component=sender"
LOCAL_IP = "127.0.0.1"
# A kubelet backs off 10 s, doubling; a dev stand-in restarts sooner.
RESTART_DELAY = 1.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodProc:
    """One Pod and the local process that runs its (first) container."""

    namespace: str
    name: str
    uid: str
    deployment: str
    container: str
    image: str
    grace: float
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None  # None until resolved
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""  # of the current (or last) run
    start_time: str = field(default_factory=_now)  # the Pod's status.startTime
    restarts: int = 0
    last_exit: dict[str, Any] | None = None  # lastState.terminated of the previous run
    tmp: Path | None = None  # the container's own TMPDIR
    down_since: float | None = None
    waiting: tuple[str, str] | None = None  # (reason, message) while it cannot start
    transition: str = field(default_factory=_now)  # when readiness last changed
    was_ready: bool = False
    reported: dict[str, Any] | None = None
    kill_at: float | None = None  # set once the Pod is gone: SIGKILL deadline


class PodRunner:
    """Reconcile local processes against sender Pods, every ``interval`` seconds."""

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
        self.log_dir = Path(log_dir or reaper.temp_dir("emailplan-runner-"))
        self.interval = interval
        self.pods: dict[str, PodProc] = {}  # by Pod uid
        self._owners: dict[str, str] = {}  # ReplicaSet uid -> Deployment name
        self._lock = threading.Lock()
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
        self._shutdown()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(90)

    def processes(self, namespace: str, name: str) -> list[subprocess.Popen[bytes]]:
        """The processes of Deployment ``name``'s Pods, including those still terminating."""
        with self._lock:
            return [
                p.proc
                for p in self.pods.values()
                if p.namespace == namespace and p.deployment == name and p.proc is not None
            ]

    # --- reconcile -----------------------------------------------------------------------------------

    def sync(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(label_selector=SELECTOR).items
        live: set[str] = set()
        for pod in pods:
            uid = pod.metadata.uid
            if pod.metadata.deletion_timestamp or pod.status.phase in ("Succeeded", "Failed"):
                continue
            live.add(uid)
            with self._lock:
                pp = self.pods.get(uid)
            if pp is None:
                pp = self._adopt(pod)
                with self._lock:
                    self.pods[uid] = pp
            if pp.kill_at is None:
                self._keep_running(pp, pod)
                self._report(pp)
        with self._lock:
            tracked = list(self.pods.values())
        for pp in tracked:
            if pp.uid not in live:
                self._terminate(pp)
        self._reap()

    def _adopt(self, pod: Any) -> PodProc:
        spec = pod.spec
        container = spec.containers[0]
        argv = [*(container.command or []), *(container.args or [])]
        if argv and argv[0] in self.command_map:
            argv[0] = self.command_map[argv[0]]
        grace = spec.termination_grace_period_seconds
        pp = PodProc(
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            uid=pod.metadata.uid,
            deployment=self._deployment_of(pod),
            container=container.name,
            image=container.image or "",
            grace=float(30 if grace is None else grace),
            argv=argv,
        )
        log.info("pod %s/%s (deployment %s): starting", pp.namespace, pp.name, pp.deployment)
        return pp

    def _deployment_of(self, pod: Any) -> str:
        """ownerReferences Pod -> ReplicaSet -> Deployment; else what the names and labels say."""
        labels = pod.metadata.labels or {}
        for ref in pod.metadata.owner_references or []:
            if ref.kind != "ReplicaSet":
                continue
            if ref.uid not in self._owners:
                try:
                    rs = self.apps.read_namespaced_replica_set(ref.name, pod.metadata.namespace)
                    owner = next(
                        (o.name for o in rs.metadata.owner_references or [] if o.kind == "Deployment"), ""
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    owner = ""
                if not owner:  # "<deployment>-<pod-template-hash>"
                    suffix = "-" + labels.get("pod-template-hash", "")
                    owner = ref.name[: -len(suffix)] if ref.name.endswith(suffix) else ref.name
                self._owners[ref.uid] = owner
            return self._owners[ref.uid]
        # A bare pod with the operator's labels: its Deployment would be emailplan-<instance>-sender.
        instance = labels.get("app.kubernetes.io/instance", "")
        return f"emailplan-{instance}-sender" if instance else ""

    def _keep_running(self, pp: PodProc, pod: Any) -> None:
        if pp.proc is not None and pp.proc.poll() is None:
            return
        if pp.proc is not None and pp.down_since is None:  # it just died
            code = pp.proc.returncode
            log.info("pod %s/%s: process exited (%s), restarting", pp.namespace, pp.name, code)
            pp.last_exit = {
                "exitCode": code if code >= 0 else 128 - code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": pp.started_at,
                "finishedAt": _now(),
            }
            if code < 0:
                pp.last_exit["signal"] = -code
            pp.down_since = time.monotonic()
            return
        if pp.down_since is not None and time.monotonic() - pp.down_since < RESTART_DELAY:
            return
        if pp.env is None:
            try:
                pp.env = self._resolve_env(pp, pod.spec.containers[0])
            except ApiException as exc:
                if exc.status not in (403, 404):
                    raise
                pp.waiting = ("CreateContainerConfigError", f"{exc.status} {exc.reason}")
                return
            pp.waiting = None
        log_path = self.log_dir / f"{pp.namespace}_{pp.name}.log"
        # A container has a /tmp of its own that goes when the runner's owner goes, however it
        # ends (the worker keeps its metrics and its forkserver's socket there: a short name).
        tmp = pp.tmp = pp.tmp or reaper.temp_dir("ep-pod-")
        env = {**os.environ, **pp.env, "TMPDIR": str(tmp), **self.extra_env}
        pp.proc = spawn(pp.argv, log_path, env=env)
        pp.started_at = _now()
        if pp.down_since is not None:
            pp.restarts += 1
            pp.down_since = None

    def _terminate(self, pp: PodProc) -> None:
        """The Pod is gone: SIGTERM now, SIGKILL after its grace period (see ``_reap``)."""
        if pp.kill_at is not None:
            return
        log.info("pod %s/%s gone: stopping its process", pp.namespace, pp.name)
        pp.kill_at = time.monotonic() + pp.grace
        self._signal(pp, signal.SIGTERM)

    def _reap(self) -> None:
        """Forget a terminating Pod only once its process has exited: until then it may still
        be finishing sends and flushing results, and ``processes()`` must show it."""
        now = time.monotonic()
        with self._lock:
            for uid, pp in list(self.pods.items()):
                if pp.kill_at is None:
                    continue
                if pp.proc is None or pp.proc.poll() is not None:
                    del self.pods[uid]
                    if pp.tmp is not None:  # the container's /tmp goes with it
                        shutil.rmtree(pp.tmp, ignore_errors=True)
                elif now >= pp.kill_at:
                    log.info("pod %s/%s: grace period over, killing", pp.namespace, pp.name)
                    self._signal(pp, signal.SIGKILL)

    @staticmethod
    def _signal(pp: PodProc, sig: int) -> None:
        if pp.proc is None or pp.proc.poll() is not None:
            return
        try:
            os.killpg(pp.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _shutdown(self) -> None:
        """Stop every process (SIGTERM, SIGKILL after each grace period), all at once."""
        with self._lock:
            tracked = list(self.pods.values())
        for pp in tracked:
            self._terminate(pp)
        while True:
            self._reap()
            with self._lock:
                if not self.pods:
                    return
            time.sleep(0.1)

    # --- pod status ----------------------------------------------------------------------------------

    def _report(self, pp: PodProc) -> None:
        running = pp.proc is not None and pp.proc.poll() is None and pp.down_since is None
        if running != pp.was_ready:
            pp.was_ready = running
            pp.transition = _now()
        state: dict[str, Any]
        if running:
            state = {"running": {"startedAt": pp.started_at}}
        elif pp.waiting:
            state = {"waiting": {"reason": pp.waiting[0], "message": pp.waiting[1]}}
        elif pp.down_since is not None and pp.last_exit:
            state = {"terminated": pp.last_exit}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        container: dict[str, Any] = {
            "name": pp.container,
            "image": pp.image,
            "imageID": "",
            "ready": running,
            "started": running,
            "restartCount": pp.restarts,
            "state": state,
        }
        if pp.proc is not None:
            container["containerID"] = f"local://{pp.proc.pid}"
        if pp.last_exit and "terminated" not in state:
            container["lastState"] = {"terminated": pp.last_exit}

        def condition(kind: str, ok: bool, since: str) -> dict[str, Any]:
            cond: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
            cond["lastProbeTime"] = None
            cond["lastTransitionTime"] = since
            if not ok:
                cond["reason"] = "ContainersNotReady"
                cond["message"] = f"containers with unready status: [{pp.container}]"
            return cond

        status = {
            "phase": "Running" if (running or pp.restarts or pp.last_exit) else "Pending",
            "conditions": [
                condition("PodScheduled", True, pp.start_time),
                condition("Initialized", True, pp.start_time),
                condition("ContainersReady", running, pp.transition),
                condition("Ready", running, pp.transition),
            ],
            "hostIP": LOCAL_IP,
            "hostIPs": [{"ip": LOCAL_IP}],
            "podIP": LOCAL_IP,
            "podIPs": [{"ip": LOCAL_IP}],
            "startTime": pp.start_time,
            "containerStatuses": [container],
        }
        if status == pp.reported:
            return
        try:
            self.core.patch_namespaced_pod_status(
                pp.name,
                pp.namespace,
                {"metadata": {"uid": pp.uid}, "status": status},
                _content_type="application/merge-patch+json",
            )
            pp.reported = status
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone (or replaced by a namesake): terminated next sync
                raise

    # --- environment ---------------------------------------------------------------------------------

    def _resolve_env(self, pp: PodProc, container: Any) -> dict[str, str]:
        """The container's environment as a kubelet would build it: envFrom first, then env."""
        namespace = pp.namespace
        c = kubernetes.client.ApiClient().sanitize_for_serialization(container)
        env: dict[str, str] = {}
        for source in c.get("envFrom", []):
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
        fields = {
            "metadata.name": pp.name,
            "metadata.namespace": pp.namespace,
            "metadata.uid": pp.uid,
            "status.podIP": LOCAL_IP,
            "status.hostIP": LOCAL_IP,
        }
        for item in c.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = item.get("valueFrom", {})
            value: str | None
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                value = self._secret(namespace, r["name"], optional=r.get("optional", False)).get(r["key"])
            elif "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                value = self._config_map(namespace, r["name"], optional=r.get("optional", False)).get(
                    r["key"]
                )
            elif "fieldRef" in ref:
                value = fields.get(ref["fieldRef"]["fieldPath"])
            else:
                value = None  # resourceFieldRef: not needed by our pods
            if value is not None:
                env[item["name"]] = value
            elif "value" not in item and not ref:
                env[item["name"]] = ""
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
        description="Run the sender Pods of a local control plane "
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
