"""Session fixtures: real PostgreSQL, moto server and Kubernetes control plane on loopback.

Each server is started once per test session by the launchers in hack/devenv
and stopped at the end, also when tests fail. Tests that need a clean slate
take the function-scoped helpers (``database_url`` gives a fresh database).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from support.e2e import Stack, start_stack
from support.worker import Workers

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.postgres import PostgresServer, pg_bin

# No process has built-in keys unless asked: the tests (and every process they start) ask.
os.environ.setdefault(
    "EMAILPLAN_DEV_MODE", "1"
)  # built-in development keys for every process the tests start


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Which tests share a pytest-xdist worker under ``-n`` (hack/test.sh, ``--dist loadgroup``).

    Node-mode tests share one machine-wide containerd directory (/run/containerd/s) and the
    network namespaces' names, so they run one after another on one worker. The tests that use
    a module-scoped fixture (a local stack, a Helm release, a built wheel) stay with their
    module, so it starts once. Everything else spreads over the workers test by test.
    """
    for item in items:
        if item.get_closest_marker("node"):
            item.add_marker(pytest.mark.xdist_group("node"))
        elif _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)  # pytest's resolved fixtures of a test function
    return info is not None and any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values())


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def database_url(postgres: PostgresServer) -> str:
    """A fresh empty database on the session's server (asyncpg URL)."""
    name = "t_" + uuid.uuid4().hex[:12]
    proc = subprocess.run(
        [pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(postgres.port), "-U", postgres.user, name],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"createdb failed: {proc.stderr.strip()}"
    return f"postgresql+asyncpg://{postgres.user}@127.0.0.1:{postgres.port}/{name}"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """moto reset to empty, with credentials in the environment as on a real pod."""
    moto_server.reset()
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    return moto_server


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeCluster]:
    """etcd + kube-apiserver + kube-controller-manager, with an admin kubeconfig."""
    cluster = KubeCluster().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def crd_installed(kube: KubeCluster, repo_root: str) -> KubeCluster:
    """The EmailPlan CRD applied and established."""
    kube.install_crd()
    return kube


@pytest.fixture
def namespace(kube: KubeCluster) -> Iterator[str]:
    """A fresh namespace for one test."""
    name = "t-" + uuid.uuid4().hex[:8]
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- Helm chart tests (charts/emailplan): the helm binary -------------------------------------
# EMAILPLAN_HELM names a helm binary; otherwise the one that hack/controlplane/build.sh built
# next to the control plane (instant when cached).


@pytest.fixture(scope="session")
def helm_bin() -> str:
    override = os.environ.get("EMAILPLAN_HELM")
    if override:
        return override
    from devenv.kube import controlplane_bin

    return str(controlplane_bin() / "helm")


# --- data plane ------------------------------------------------------------------------------------


@pytest.fixture
def migrated(database_url: str) -> str:
    """A fresh database with the ledger's migrations applied (as `emailplan db upgrade` does)."""
    from emailplan.sender.migrate import upgrade_to

    upgrade_to(database_url)
    return database_url


@pytest.fixture
async def engine(migrated: str):  # type: ignore[no-untyped-def]
    """The ledger's async engine on the migrated database, disposed after the test."""
    from emailplan.sender.db import make_engine

    eng = make_engine(url=migrated, pool_size=4)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture(scope="session")
def ident():  # type: ignore[no-untyped-def]
    """Test RSA key and certificate: serves the local HTTPS certificate URL and signs SNS messages."""
    from support.api import make_identity

    return make_identity()


@pytest.fixture
async def api(migrated: str, ident):  # type: ignore[no-untyped-def]
    """The events and stats API on loopback against a migrated database (opens flushed every 0.1 s)."""
    from support.api import start_api, stop_api

    live = await start_api(migrated, ident, open_flush_seconds=0.1)
    try:
        yield live
    finally:
        await stop_api(live)


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest,
    crd_installed: KubeCluster,
    postgres: PostgresServer,
    moto_server: MotoServer,
) -> Iterator[Stack]:
    """The local stack (API, operator, pod runner) of one test module, on the shared servers."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    st = start_stack(crd_installed, postgres, moto_server, f"emailplan-{module}-")
    try:
        yield st
    finally:
        st.stop()
        print(f"e2e logs kept in {st.base}")


@pytest.fixture
def ses_identity(aws: MotoServer) -> None:
    boto3.client("ses", endpoint_url=aws.endpoint_url).verify_email_identity(EmailAddress="news@example.com")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    ws = Workers(tmp_path)
    try:
        yield ws
    finally:
        ws.stop_all()
