"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries come from hack/controlplane/build.sh (built from Go modules,
cached outside the repository). The launcher gives every component a free
port and TLS from a throwaway CA, turns on RBAC and service-account tokens,
writes an admin kubeconfig, waits until the ``default`` namespace exists and
stops everything it started, also when the caller fails.

Command line (for people poking at the cluster by hand)::

    python hack/devenv/kube.py up [--dir DIR]   # runs until Ctrl-C or SIGTERM; DIR removed after
    python hack/devenv/kube.py up --detach      # returns; state kept in DIR
    python hack/devenv/kube.py down [--dir DIR]

``up`` installs the EmailPlan CRD and prints the ``KUBECONFIG`` to export and where the
``helm`` built with the control plane is (it is not put on ``PATH``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `devenv` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devenv import reaper
from devenv.pki import LocalPKI
from devenv.ports import free_port, wait_for
from devenv.procs import spawn, stop, stop_like_ctrl_c

BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "controlplane" / "build.sh"
CRD = Path(__file__).resolve().parents[2] / "crds" / "emailplan.yaml"
SERVICE_CIDR = "10.96.0.0/16"


def controlplane_bin() -> Path:
    """Directory with etcd, kube-apiserver, kube-controller-manager and helm (built if missing)."""
    override = os.environ.get("EMAILPLAN_CONTROLPLANE_BIN")
    if override:
        return Path(override)
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class KubeCluster:
    """One control plane. ``start()`` returns when the API answers and ``default`` exists."""

    base: Path = field(default_factory=lambda: reaper.temp_dir("emailplan-kube-"))
    with_controller_manager: bool = True
    controllers: str = "*"
    bin_dir: Path | None = None
    api_port: int = 0
    # A non-loopback address (hack/node's network namespace): the API server then listens on
    # every address of its namespace and advertises this one, so Pods reach it through the
    # `kubernetes` Service and the API server reaches the kubelet for logs and exec.
    node_address: str | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.base / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        """Environment for kubectl and clients that should talk to this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            input=input,
        )

    def install_crd(self, crd: Path = CRD) -> None:
        """Apply the EmailPlan CRD and wait until the API serves it (idempotent)."""
        self.kubectl("apply", "-f", str(crd))
        # Right after the apply, kubectl's discovery may not list the new resource yet and
        # `wait` fails at once: ask again until the deadline.
        deadline = time.monotonic() + 60
        while True:
            done = self.kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=20s",
                "crd/emailplans.emailplan.io",
                check=False,
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the EmailPlan CRD is not Established: {done.stderr.strip()}")
            time.sleep(1)

    def start(self) -> KubeCluster:
        bins = self.bin_dir or controlplane_bin()
        try:
            self._start(bins)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, bins: Path) -> None:
        pki = LocalPKI(self.base / "pki")
        serving = pki.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            ips=("127.0.0.1", "10.96.0.1", *([self.node_address] if self.node_address else [])),
        )
        admin = pki.issue("admin", "emailplan-admin", org="system:masters")
        kcm = pki.issue("controller-manager", "system:kube-controller-manager")
        sa_key, sa_pub = pki.service_account_keys()

        etcd_port, etcd_peer = free_port(), free_port()
        self.procs["etcd"] = spawn(
            [
                str(bins / "etcd"),
                "--name=local",
                f"--data-dir={self.base / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=local=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            self.base / "etcd.log",
        )
        wait_for(lambda: self._alive("etcd") and _http_ok(f"http://127.0.0.1:{etcd_port}/health"), 60, "etcd")

        self.api_port = self.api_port or free_port()
        self.procs["kube-apiserver"] = spawn(
            [
                str(bins / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--bind-address={'0.0.0.0' if self.node_address else '127.0.0.1'}",
                f"--advertise-address={self.node_address or '127.0.0.1'}",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.base / 'pki'}",
                f"--tls-cert-file={serving[0]}",
                f"--tls-private-key-file={serving[1]}",
                f"--client-ca-file={pki.ca_path}",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                # The node's name does not resolve (no DNS): reach kubelets by their address.
                *(["--kubelet-preferred-address-types=InternalIP"] if self.node_address else []),
                "--v=0",
            ],
            self.base / "kube-apiserver.log",
        )
        self._write_kubeconfig(self.kubeconfig, pki.ca_path, *admin)
        wait_for(
            lambda: (
                self._alive("kube-apiserver")
                and self._get("/readyz") == 200
                and self._namespace_exists("default")
            ),
            180,
            "kube-apiserver (default namespace)",
            interval=0.5,
        )

        if self.with_controller_manager:
            kcm_config = self.base / "controller-manager.kubeconfig"
            self._write_kubeconfig(kcm_config, pki.ca_path, *kcm)
            self.procs["kube-controller-manager"] = spawn(
                [
                    str(bins / "kube-controller-manager"),
                    f"--kubeconfig={kcm_config}",
                    f"--authentication-kubeconfig={kcm_config}",
                    f"--authorization-kubeconfig={kcm_config}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    f"--service-account-private-key-file={sa_key}",
                    f"--root-ca-file={pki.ca_path}",
                    "--use-service-account-credentials=true",
                    f"--controllers={self.controllers}",
                    "--leader-elect=false",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--concurrent-gc-syncs=5",
                    "--v=0",
                ],
                self.base / "kube-controller-manager.log",
            )
            wait_for(
                lambda: self._alive("kube-controller-manager") and self._has_sa("default"),
                120,
                "kube-controller-manager (default service account)",
                interval=0.5,
            )

    def _alive(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            log = (self.base / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log}")
        return True

    def _write_kubeconfig(self, path: Path, ca: Path, cert: Path, key: Path) -> None:
        b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emailplan-local",
            "clusters": [
                {
                    "name": "emailplan-local",
                    "cluster": {"server": self.server, "certificate-authority-data": b64(ca)},
                }
            ],
            "users": [
                {"name": "admin", "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
            ],
            "contexts": [
                {"name": "emailplan-local", "context": {"cluster": "emailplan-local", "user": "admin"}}
            ],
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.base / "pki" / "ca.crt"))
        ctx.load_cert_chain(self.base / "pki" / "admin.crt", self.base / "pki" / "admin.key")
        return ctx

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.server + path, context=self._ssl(), timeout=3) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def _namespace_exists(self, name: str) -> bool:
        return self._get(f"/api/v1/namespaces/{name}") == 200

    def _has_sa(self, ns: str) -> bool:
        return self._get(f"/api/v1/namespaces/{ns}/serviceaccounts/default") == 200

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            stop(self.procs.pop(name, None))

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a local Kubernetes control plane "
        "(etcd + kube-apiserver + kube-controller-manager) on loopback."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    default_dir = Path(os.environ.get("EMAILPLAN_DEV_DIR", ".devenv")) / "kube"
    up = sub.add_parser("up", help="start the control plane and print KUBECONFIG")
    up.add_argument("--dir", type=Path, default=default_dir, help=f"state directory (default {default_dir})")
    up.add_argument("--detach", action="store_true", help="return once ready; stop later with 'down'")
    up.add_argument("--no-controller-manager", action="store_true")
    down = sub.add_parser("down", help="stop a detached control plane")
    down.add_argument("--dir", type=Path, default=default_dir)
    args = parser.parse_args(argv)

    state = args.dir / "pids.json"
    if args.cmd == "down":
        if not state.exists():
            print(f"nothing running in {args.dir}")
            return 0
        pids = list(json.loads(state.read_text()).values())[::-1]  # controllers first, etcd last
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(_running(pid) for pid in pids):
                time.sleep(0.2)
            if not any(_running(pid) for pid in pids):
                break
        state.unlink()
        print("control plane stopped")
        return 0

    if state.exists():
        print(f"already running? {state} exists; run 'down' first", file=sys.stderr)
        return 1
    if args.dir.exists():
        shutil.rmtree(args.dir)
    args.dir.mkdir(parents=True)
    print("building or reusing control-plane binaries ...", file=sys.stderr)
    bins = controlplane_bin()
    cluster = KubeCluster(
        base=args.dir.resolve(), bin_dir=bins, with_controller_manager=not args.no_controller_manager
    )
    if args.detach:
        # Children must outlive this process: start them without the death signal.
        os.environ["EMAILPLAN_DETACH"] = "1"
    else:
        # Stopped like Ctrl-C by SIGTERM, SIGHUP or our parent's death; the watchdog stops the
        # servers and removes the directory (private keys, etcd data) even after a SIGKILL.
        stop_like_ctrl_c()
        reaper.track_dir(args.dir.resolve())
    try:
        return _serve(cluster, bins, args.dir, args.detach, state)
    except KeyboardInterrupt:  # told to stop while starting
        return 130
    finally:
        if not args.detach:
            cluster.cleanup()


def _serve(cluster: KubeCluster, bins: Path, state_dir: Path, detach: bool, state: Path) -> int:
    cluster.start()
    cluster.install_crd()
    print(f"control plane ready at {cluster.server}; EmailPlan CRD installed", file=sys.stderr)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f'export PATH="{bins}:$PATH"   # helm (and etcd, kube-apiserver) built with the control plane')
    stop_hint = f"python hack/devenv/kube.py down --dir {state_dir}" if detach else "Ctrl-C here"
    print(f"then: kubectl get eplan -A; stop with {stop_hint}", file=sys.stderr)
    sys.stdout.flush()
    if detach:
        state.write_text(json.dumps({k: p.pid for k, p in cluster.procs.items()}))
        return 0
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
