"""A local SES v2 ``GetAccount`` endpoint (moto's server answers it 404).

It speaks the real wire format (REST JSON, ``GET /v2/email/account``) so the data plane
reads it through the real aiobotocore client; tests set the account it reports with
``PUT /_stub/account`` (the same JSON) to play a small quota or a PROBATION/SHUTDOWN account.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

DEFAULT_ACCOUNT: dict[str, Any] = {
    "SendQuota": {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 0.0},
    "EnforcementStatus": "HEALTHY",
    "ProductionAccessEnabled": False,
    "SendingEnabled": True,
    "DedicatedIpAutoWarmupEnabled": False,
}


class AccountStub:
    """``async with AccountStub() as stub``: ``stub.url`` answers GetAccount with ``stub.account``."""

    def __init__(self, account: dict[str, Any] | None = None) -> None:
        self.account = copy.deepcopy(account or DEFAULT_ACCOUNT)
        self.calls = 0
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _get(self, _: web.Request) -> web.Response:
        self.calls += 1
        return web.json_response(self.account)

    async def _put(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.account = {**self.account, **body}
        return web.json_response(self.account)

    async def __aenter__(self) -> AccountStub:
        app = web.Application()
        app.router.add_get("/v2/email/account", self._get)
        app.router.add_put("/_stub/account", self._put)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def main(argv: list[str]) -> None:
    """``python hack/devenv/sesaccount.py PORT``: the stub as its own process (the kube end-to-end tests)."""
    stub = AccountStub()
    app = web.Application()
    app.router.add_get("/v2/email/account", stub._get)
    app.router.add_put("/_stub/account", stub._put)
    web.run_app(app, host="127.0.0.1", port=int(argv[1]), print=None)


if __name__ == "__main__":
    import sys

    main(sys.argv)
