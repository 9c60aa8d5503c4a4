"""moto in server mode on a free loopback port: SES, SQS, SNS and S3 for real boto3 clients."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devenv import reaper
from devenv.ports import free_port, wait_for
from devenv.procs import spawn, stop

REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@dataclass
class MotoServer:
    port: int = field(default_factory=free_port)
    base: Path = field(default_factory=lambda: reaper.temp_dir("emailplan-moto-"))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for processes that reach this server as they would reach AWS."""
        return {**CREDENTIALS, "EMAILPLAN_AWS_ENDPOINT_URL": self.endpoint_url}

    def start(self) -> MotoServer:
        self.proc = spawn(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            self.base / "moto.log",
        )
        wait_for(self._ready, 60, f"moto server on port {self.port}")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"moto exited: {(self.base / 'moto.log').read_text()[-2000:]}")
        with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2) as r:
            return bool(r.status == 200)

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()

    def data(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=30) as r:
            return dict(json.load(r))

    def sent_emails(self) -> list[dict[str, Any]]:
        """Every message SES accepted, Simple and Raw, as moto stores them."""
        ses = self.data().get("ses", {})
        out: list[dict[str, Any]] = []
        for kind in ("Message", "RawMessage"):
            stored = ses.get(kind) or []
            # moto 5.2 lists the messages; older versions keyed them by region or id.
            if isinstance(stored, dict):
                stored = [m for v in stored.values() for m in (v if isinstance(v, list) else [v])]
            out.extend(stored)
        return out

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
