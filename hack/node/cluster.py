"""A real one-node Kubernetes cluster in a network namespace of its own.

Why a network namespace: the kubelet refuses a loopback node address, Pods need
addresses of their own, and the workplace's network rule allows traffic only to
loopback or to hosts inside namespaces the run created. So the run creates one
(``ip netns add``), gives it the node address (``NODE_IP``, on the namespace's
own loopback interface) and a bridge for the Pods (CNI), and starts every part inside it:
etcd, kube-apiserver, kube-controller-manager, kube-scheduler (Pods get bound),
containerd + runc, the kubelet, kube-proxy (iptables mode: Service ClusterIPs
work from Pods), PostgreSQL and moto (listening on the node address so Pods
reach them). The namespace has no route out: nothing leaves it.

The calling thread enters the namespace (``setns``) for as long as the cluster
runs, so kubectl, helm and HTTP clients it starts talk to the parts directly;
``stop()`` returns it to where it was.

Images come from hack/node/image.sh (built with buildah, cached) and are
imported into this containerd; Pods use ``imagePullPolicy: Never``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `devenv` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from devenv import reaper, sesaccount
from devenv.kube import KubeCluster, controlplane_bin
from devenv.moto import CREDENTIALS, MotoServer
from devenv.ports import free_port, port_open, wait_for
from devenv.postgres import PostgresServer, pg_bin
from devenv.procs import spawn, stop, stop_like_ctrl_c

HERE = Path(__file__).resolve().parent
NODE_IP = "172.31.213.1"
POD_SUBNET = "10.88.0.0/24"
NODE_NAME = "emailplan-node"
FIRST_PLAN = "examples/emailplan-inline.yaml"  # the plan the printed steps apply
CLONE_NEWNET = 0x40000000
# The kubelet binds its device-plugin socket here whatever --root-dir says (a fixed path).
KUBELET_FIXED_SOCKET = Path("/var/lib/kubelet/device-plugins/kubelet.sock")
# Below a run's directory: containerd's socket and its state (the tasks' bundles).
CONTAINERD_SOCKET, CONTAINERD_STATE = "containerd.sock", "containerd-state"
SHIM_SOCKET_DIR = Path("/run/containerd/s")  # where containerd 1.6's shims bind, whatever its config says


class NodeError(RuntimeError):
    """The node could not start; the message names the part and quotes its log."""


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _run(*argv: str) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise NodeError(f"setns failed: {os.strerror(ctypes.get_errno())}")


def build_images() -> dict[str, str]:
    """Build or reuse the sandbox and project images (hack/node/image.sh); KEY=VALUE of its last line."""
    out = subprocess.run(["bash", str(HERE / "image.sh")], check=True, stdout=subprocess.PIPE, text=True)
    last = out.stdout.strip().splitlines()[-1]
    return dict(pair.split("=", 1) for pair in last.split())


class NodePostgres(PostgresServer):
    """PostgreSQL listening on every address of the node's namespace, trusting the Pod subnet."""

    def _launch(self, ids: dict[str, object]) -> None:
        hba = self.base / "data" / "pg_hba.conf"
        line = f"host all all {POD_SUBNET} trust\n"
        if line not in hba.read_text():
            with hba.open("a") as f:
                f.write(line)
        argv = [pg_bin("postgres"), "-D", str(self.base / "data"), "-p", str(self.port), "-h", "*"]
        argv += ["-k", str(self.base), "-c", "fsync=off", "-c", "max_connections=200"]
        if ids:
            # Changing user clears the parent-death signal: setpriv sets it again after the change.
            die = [] if reaper.detached() else ["--pdeathsig=SIGKILL"]
            argv = [
                "setpriv",
                f"--reuid={ids['user']}",
                f"--regid={ids['group']}",
                "--clear-groups",
                *die,
                *argv,
            ]
        self.proc = spawn(argv, self.base / "postgres.log")
        wait_for(self._ready, 30, f"PostgreSQL on port {self.port}")

    def pod_url(self) -> str:
        """The asyncpg URL as Pods use it (the node address, not loopback)."""
        return f"postgresql+asyncpg://{self.user}@{NODE_IP}:{self.port}/{self.database}"


class NodeMoto(MotoServer):
    """moto listening on every address of the node's namespace."""

    def start(self) -> NodeMoto:
        self.proc = spawn(
            [sys.executable, "-m", "moto.server", "-H", "0.0.0.0", "-p", str(self.port)],
            self.base / "moto.log",
        )
        wait_for(self._ready, 60, f"moto server on port {self.port}")
        return self

    def pod_url(self) -> str:
        return f"http://{NODE_IP}:{self.port}"


@dataclass
class NodeCluster:
    """Control plane, node and data stores in one fresh network namespace."""

    # Removed by the watchdog (devenv.reaper) however the run ends, like the namespace below.
    base: Path = field(default_factory=lambda: reaper.temp_dir("epnode-"))
    netns: str = field(default_factory=lambda: "emailplan-" + uuid.uuid4().hex[:8])
    images: dict[str, str] = field(default_factory=dict)
    kube: KubeCluster | None = None
    postgres: NodePostgres | None = None
    moto: NodeMoto | None = None
    account_port: int = 0  # the SES account stub (GetAccount, ListSuppressedDestinations), for Pods
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _home_ns: int | None = None

    @property
    def socket(self) -> Path:
        return self.base / CONTAINERD_SOCKET

    def start(self) -> NodeCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        t0 = time.monotonic()
        bins = controlplane_bin()
        for name in ("kubelet", "kube-scheduler", "kube-proxy"):
            if not (bins / name).exists():
                raise NodeError(f"{bins / name} missing: run hack/node/setup.sh")
        self.images = self.images or build_images()
        self._enter_namespace()
        self.base.chmod(0o755)  # PostgreSQL runs as an unprivileged user below this directory
        self.postgres = NodePostgres(base=self.base / "pg")
        self.postgres.base.mkdir(parents=True, exist_ok=True)
        self.postgres.start()
        self.moto = NodeMoto(base=self.base / "moto")
        self.moto.base.mkdir(parents=True, exist_ok=True)
        self.moto.start()
        self.account_port = free_port()  # SES GetAccount / ListSuppressedDestinations (moto has neither)
        self.procs["sesaccount"] = spawn(
            [sys.executable, sesaccount.__file__, str(self.account_port), "unlimited", "0.0.0.0"],
            self.base / "sesaccount.log",
        )
        wait_for(lambda: port_open(self.account_port), 30, "SES account stub")
        self.kube = KubeCluster(base=self.base / "kube", bin_dir=bins, node_address=NODE_IP)
        self.kube.base.mkdir(parents=True, exist_ok=True)
        self.kube.start()
        self._start_containerd()
        self._start_scheduler(bins)
        self._start_kube_proxy(bins)
        self._start_kubelet(bins)
        wait_for(self._node_ready, 120, f"node {NODE_NAME} Ready")
        print(f"[node] cluster ready in {time.monotonic() - t0:.0f} s (netns {self.netns}, dir {self.base})")

    # --- network namespace -------------------------------------------------------------------

    def _enter_namespace(self) -> None:
        _run("ip", "netns", "add", self.netns)
        # After a SIGKILL nothing here runs: the watchdog then ends the shims, unmounts what
        # containerd and the kubelet mounted and deletes the namespace (`cluster.py reap`).
        reaper.on_exit([sys.executable, str(Path(__file__).resolve()), "reap", str(self.base), self.netns])
        ns = ("ip", "-n", self.netns)
        _run(*ns, "link", "set", "lo", "up")
        # The node address sits on the namespace's own loopback interface (this VM kernel has no
        # dummy interfaces); it is not a 127/8 address, so the kubelet accepts it. There is no
        # default route: nothing outside the namespace is reachable from it.
        _run(*ns, "addr", "add", f"{NODE_IP}/32", "dev", "lo")
        _run("ip", "netns", "exec", self.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        self._home_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)

    def _leave_namespace(self) -> None:
        if self._home_ns is not None:
            _setns(self._home_ns)
            os.close(self._home_ns)
            self._home_ns = None
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)

    # --- parts -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.procs[name] = spawn(argv, self.base / f"{name}.log")

    def _alive(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise NodeError(f"{name} exited with {proc.returncode}:\n{_tail(self.base / f'{name}.log')}")
        return True

    def _start_containerd(self) -> None:
        cni = self.base / "cni"
        cni.mkdir()
        (cni / "10-emailplan.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "emailplan",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "cni0",
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.base / "cni-ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                }
            )
        )
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = self.base / "containerd.toml"
        config.write_text(
            f"""version = 2
root = "{self.base / "containerd-root"}"
state = "{self.base / CONTAINERD_STATE}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[{cri}]
  sandbox_image = "{self.images["PAUSE_IMAGE"]}"
  # A negative oom_score_adj (the sandbox asks for -998) is refused on this machine kind.
  restrict_oom_score_adj = true
  # Pod network namespaces live under this run's state directory, not in /run/netns.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [{cri}.containerd]
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state of the containers stays in this run's directory (default: /run/containerd/runc).
        Root = "{self.base / "runc"}"
"""
        )
        self._spawn("containerd", ["containerd", "--config", str(config)])
        wait_for(lambda: self._alive("containerd") and self.socket.exists(), 60, "containerd socket")
        for archive in (self.images["PAUSE_ARCHIVE"], self.images["IMAGE_ARCHIVE"]):
            self.ctr("images", "import", archive)

    def ctr(self, *args: str) -> str:
        return _run("ctr", "--address", str(self.socket), "-n", "k8s.io", *args)

    def _admin_kubeconfig(self) -> str:
        assert self.kube is not None
        return str(self.kube.kubeconfig)

    def _start_scheduler(self, bins: Path) -> None:
        kc = self._admin_kubeconfig()
        self._spawn(
            "kube-scheduler",
            [
                str(bins / "kube-scheduler"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
            ],
        )

    def _start_kube_proxy(self, bins: Path) -> None:
        config = self.base / "kube-proxy.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": self._admin_kubeconfig()},
                    "mode": "iptables",
                    "hostnameOverride": NODE_NAME,
                    "clusterCIDR": POD_SUBNET,
                    "healthzBindAddress": f"127.0.0.1:{free_port()}",
                    "metricsBindAddress": f"127.0.0.1:{free_port()}",
                    # Pod -> ClusterIP -> Pod on the same bridge: SNAT makes the reply come back
                    # through the node, so it is un-NATed without br_netfilter.
                    "iptables": {"masqueradeAll": True},
                    # conntrack sysctls are global on this kernel: leave them alone.
                    "conntrack": {
                        "maxPerCore": 0,
                        "min": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                }
            )
        )
        self._spawn("kube-proxy", [str(bins / "kube-proxy"), f"--config={config}"])

    def _start_kubelet(self, bins: Path) -> None:
        config = self.base / "kubelet.yaml"
        resolv = self.base / "resolv.conf"
        resolv.write_text("options ndots:1\n")
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "cgroupDriver": "cgroupfs",
                    "cgroupsPerQOS": False,
                    "enforceNodeAllocatable": [],
                    "failSwapOn": False,
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    "address": NODE_IP,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": free_port(),
                    "evictionHard": {},
                    "imageGCHighThresholdPercent": 100,
                    "resolvConf": str(resolv),
                    "podLogsDir": str(self.base / "pod-logs"),
                    # The API server reaches the kubelet for `kubectl logs`/`exec` without a client
                    # certificate; the kubelet listens only inside this namespace.
                    "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
                    "authorization": {"mode": "AlwaysAllow"},
                }
            )
        )
        self._spawn(
            "kubelet",
            [
                str(bins / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self._admin_kubeconfig()}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--root-dir={self.base / 'kubelet'}",
                f"--cert-dir={self.base / 'kubelet-pki'}",
                "--v=1",
            ],
        )

    def _node_ready(self) -> bool:
        for name in self.procs:
            self._alive(name)
        assert self.kube is not None
        out = self.kube.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        conditions = json.loads(out.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def logs(self) -> str:
        return "\n".join(f"--- {n}.log ---\n{_tail(self.base / f'{n}.log', 1500)}" for n in self.procs)

    def account_pod_url(self) -> str:
        """The SES account stub as Pods reach it (the node address)."""
        return f"http://{NODE_IP}:{self.account_port}"

    def stop(self) -> None:
        """Stop every part; containers first (the kubelet's Pods), the namespace last."""
        stop(self.procs.pop("kubelet", None))
        if "containerd" in self.procs and self.socket.exists():
            _stop_all_containers(self.socket)
        for name in ("kube-proxy", "kube-scheduler", "containerd", "sesaccount"):
            stop(self.procs.pop(name, None))
        _kill_shims(self.base)
        for part in (self.kube, self.moto, self.postgres):
            if part is not None:
                part.stop()
        _unmount_under(self.base)
        _remove_kubelet_socket()
        self._leave_namespace()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _stop_all_containers(socket: Path) -> None:
    """Kill every container task of this containerd (the kubelet does not stop Pods when it exits)."""
    ctr = ["ctr", "--address", str(socket), "-n", "k8s.io", "tasks"]
    for task in subprocess.run([*ctr, "ls", "-q"], capture_output=True, text=True).stdout.split():
        subprocess.run([*ctr, "kill", "-s", "SIGKILL", task], capture_output=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "RUNNING" not in subprocess.run([*ctr, "ls"], capture_output=True, text=True).stdout:
            return
        time.sleep(0.5)


def _kill_shims(base: Path) -> None:
    """containerd's runc shims detach from it; end the ones that served this run's containerd,
    and their containers first (killing a shim does not end its container; after a SIGKILLed
    ``up`` no containerd is left to do it). Then remove the shims' sockets.

    A shim binds its socket in /run/containerd/s (containerd 1.6 fixes that place) and removes it
    only when containerd shuts it down. The sockets are read from the bundles' ``address`` files
    before anything is killed (see ``_shim_sockets``), so one is removed even if its shim died
    already; reading a shim's file table instead raced with the shim closing files as its
    container died, and once left a socket behind.
    """
    sockets = _shim_sockets(base / CONTAINERD_STATE)
    marker = str(base / CONTAINERD_SOCKET).encode()
    parent: dict[int, int] = {}
    shims: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and marker in cmdline:
            shims.append(int(proc.name))
    below = set(shims)
    while grown := {pid for pid, ppid in parent.items() if ppid in below} - below:
        below |= grown
    for pid in below - set(shims):
        _kill(pid)
    for shim in shims:
        _kill(shim)
    for path in sockets:
        path.unlink(missing_ok=True)


def _shim_sockets(state: Path) -> set[Path]:
    """The sockets of this run's shims: each task's bundle in containerd's state directory holds
    its shim's address (the record containerd itself reads to reconnect to its shims after a
    restart). Only paths in /run/containerd/s count, so a damaged file cannot remove anything else.
    """
    found: set[Path] = set()
    for record in state.glob("io.containerd.runtime.v2.task/*/*/address"):
        try:
            address = record.read_text().strip()
        except OSError:
            continue
        path = Path(address.removeprefix("unix://"))
        if address.startswith("unix://") and path.parent == SHIM_SOCKET_DIR and path.name.isalnum():
            found.add(path)
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def _remove_kubelet_socket() -> None:
    """The kubelet's socket outside this run's directory, and its directories if nothing else is there."""
    KUBELET_FIXED_SOCKET.unlink(missing_ok=True)
    for directory in (KUBELET_FIXED_SOCKET.parent, KUBELET_FIXED_SOCKET.parent.parent):
        try:
            directory.rmdir()
        except OSError:  # not empty (a real kubelet's files) or already gone
            return


def _unmount_under(base: Path) -> None:
    """Unmount what containerd and the kubelet left mounted below ``base`` (deepest first)."""
    mounts = [
        line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines() if str(base) in line
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def _verify_sender_domain(moto: MotoServer, domain: str = "example.com") -> None:
    """The examples send from example.com: verified in moto's SES, as a real account needs."""
    import boto3

    ses = boto3.client(
        "ses",
        endpoint_url=moto.endpoint_url,
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    ses.verify_domain_identity(Domain=domain)


def next_steps(cluster: NodeCluster, bins: Path) -> str:
    """What to type next, with this run's addresses filled in (README "Node mode")."""
    assert cluster.kube is not None and cluster.postgres is not None and cluster.moto is not None
    ns, repo = "emailplan-system", HERE.parent.parent
    secret = f"kubectl -n {ns} create secret generic"
    tag = cluster.images["IMAGE"].rsplit(":", 1)[1]
    venv = Path(sys.executable).parent  # the project's virtualenv (`emailplan stats` in the chart's notes)
    api_key = f"kubectl -n {ns} get secret emailplan-api-key -o jsonpath='{{.data.EMAILPLAN_API_KEY}}'"
    plan = yaml.safe_load((repo / FIRST_PLAN).read_text())["metadata"]["name"]
    return f"""
Node cluster running in network namespace {cluster.netns}; everything is reachable only inside it.
Enter it (kubectl, helm and the emailplan command on PATH), in another terminal, as root:

  ip netns exec {cluster.netns} env KUBECONFIG={cluster.kube.kubeconfig} PATH="{bins}:{venv}:$PATH" bash

Then, in that shell, install the product as a real cluster would run it:

  kubectl create namespace {ns}
  {secret} emailplan-database --from-literal=EMAILPLAN_DATABASE_URL={cluster.postgres.pod_url()}
  {secret} emailplan-token-key --from-literal=EMAILPLAN_TOKEN_KEY="$(openssl rand -hex 32)"
  {secret} emailplan-api-key --from-literal=EMAILPLAN_API_KEY="$(openssl rand -hex 32)"
  {secret} emailplan-aws --from-literal=AWS_ACCESS_KEY_ID=testing --from-literal=AWS_SECRET_ACCESS_KEY=testing
  helm install emailplan {repo}/charts/emailplan -n {ns} --wait \\
    -f {repo}/charts/emailplan/ci/values-local.yaml --set image.tag={tag} \\
    --set aws.endpointUrl={cluster.moto.pod_url()} \\
    --set aws.sesAccountEndpointUrl={cluster.account_pod_url()}
  kubectl apply -n {ns} -f {repo / FIRST_PLAN}
  kubectl get emailplans -n {ns} -w

When it shows Completed, stop the watch (Ctrl-C) and ask the API for the plan's counts (as the
chart's notes say: the API answers inside the cluster only, so forward a port to it):

  kubectl -n {ns} port-forward svc/emailplan-api 8080:80 >/dev/null &
  sleep 3
  export EMAILPLAN_API_URL=http://127.0.0.1:8080
  export EMAILPLAN_API_KEY="$({api_key} | base64 -d)"
  emailplan stats {ns}/{plan}

The examples' sender domain example.com is verified in SES (moto) already.
image:      {cluster.images["IMAGE"]}
database:   {cluster.postgres.pod_url()}
AWS (moto): {cluster.moto.pod_url()}
logs:       {cluster.base}/*.log
Ctrl-C (or SIGTERM) stops it all."""


def reap(base: Path, netns: str) -> None:
    """What a SIGKILLed ``up`` leaves that is not a process group or a directory (the watchdog runs it).

    The kubelet's socket goes first, as it costs nothing: once (CI, 2026-12-08, two test
    workers) a killed run's socket was still there when the namespace and directory were
    gone, and no step after this one can now stand in its way. The cause was not found.
    """
    _remove_kubelet_socket()
    _kill_shims(base)
    _unmount_under(base)
    subprocess.run(["ip", "netns", "delete", netns], capture_output=True)


def main() -> int:
    """``python hack/node/cluster.py up``: start the node cluster and wait for Ctrl-C (or SIGTERM)."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="Run the one-node cluster of node mode (root).")
    parser.add_argument("cmd", choices=["up", "reap"])
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cmd == "reap":
        reap(Path(args.rest[0]), args.rest[1])
        return 0
    stop_like_ctrl_c()  # SIGTERM, SIGHUP and the parent's death stop it like Ctrl-C
    cluster = NodeCluster()
    try:
        cluster.start()
        assert cluster.moto is not None
        _verify_sender_domain(cluster.moto)
        print(next_steps(cluster, controlplane_bin()), flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
