"""A local SES v2 account endpoint: ``GetAccount`` and ``ListSuppressedDestinations`` (moto has neither).

It speaks the real wire format (REST JSON, ``GET /v2/email/account`` and
``GET /v2/email/suppression/addresses``) so the data plane reads it through the real
aiobotocore client; tests set the account it reports with ``PUT /_stub/account`` (the same
JSON) to play a small quota or a PROBATION/SHUTDOWN account, and the account-level
suppression list with ``PUT /_stub/suppressed`` (``[{"EmailAddress", "Reason"}]``). The list
is served in pages of ``PageSize`` (SES: at most 1,000) chained by ``NextToken``, as SES does.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from aiohttp import web

DEFAULT_ACCOUNT: dict[str, Any] = {
    "SendQuota": {"Max24HourSend": 200.0, "MaxSendRate": 1.0, "SentLast24Hours": 0.0},
    "EnforcementStatus": "HEALTHY",
    "ProductionAccessEnabled": False,
    "SendingEnabled": True,
    "DedicatedIpAutoWarmupEnabled": False,
}
# What the stack's stub reports (demo, e2e): no quota, so only the tests that mean to limit do.
UNLIMITED_ACCOUNT: dict[str, Any] = {
    **DEFAULT_ACCOUNT,
    "SendQuota": {"Max24HourSend": -1.0, "MaxSendRate": 2000.0, "SentLast24Hours": 0.0},
    "ProductionAccessEnabled": True,
}
MAX_PAGE_SIZE = 1000  # SES's limit for ListSuppressedDestinations


class AccountStub:
    """``async with AccountStub() as stub``: ``stub.url`` answers GetAccount with ``stub.account``."""

    def __init__(self, account: dict[str, Any] | None = None) -> None:
        self.account = copy.deepcopy(account or DEFAULT_ACCOUNT)
        self.calls = 0
        self.suppressed: list[dict[str, Any]] = []  # the account-level suppression list, in order
        self.list_calls = 0  # ListSuppressedDestinations pages served
        self.list_failure: int | None = None  # an HTTP status the list answers instead (outage tests)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _get(self, _: web.Request) -> web.Response:
        self.calls += 1
        return web.json_response(self.account)

    async def _put(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.account = {**self.account, **body}
        return web.json_response(self.account)

    async def _list(self, request: web.Request) -> web.Response:
        """One page of the list; ``NextToken`` is the offset of the next page (opaque to clients)."""
        self.list_calls += 1
        if self.list_failure is not None:
            return web.json_response(
                {"message": "stub outage"},
                status=self.list_failure,
                headers={"x-amzn-ErrorType": "TooManyRequestsException"},
            )
        try:
            size = int(request.query.get("PageSize", MAX_PAGE_SIZE))
            start = int(request.query.get("NextToken", "0"))
        except ValueError:
            return _bad_request("NextToken or PageSize is not valid")
        if not 1 <= size <= MAX_PAGE_SIZE or start < 0:
            return _bad_request("PageSize must be 1 to 1000")
        reasons = request.query.getall("Reason", [])
        rows = [s for s in self.suppressed if not reasons or s["Reason"] in reasons]
        page = rows[start : start + size]
        body: dict[str, Any] = {
            "SuppressedDestinationSummaries": [
                {"LastUpdateTime": s.get("LastUpdateTime", time.time()), **s} for s in page
            ]
        }
        if start + size < len(rows):
            body["NextToken"] = str(start + size)
        return web.json_response(body)

    async def _put_list(self, request: web.Request) -> web.Response:
        self.suppressed = list(await request.json())
        return web.json_response({"count": len(self.suppressed)})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/email/account", self._get)
        app.router.add_put("/_stub/account", self._put)
        app.router.add_get("/v2/email/suppression/addresses", self._list)
        app.router.add_put("/_stub/suppressed", self._put_list)
        return app

    async def __aenter__(self) -> AccountStub:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _bad_request(message: str) -> web.Response:
    return web.json_response(
        {"message": message}, status=400, headers={"x-amzn-ErrorType": "BadRequestException"}
    )


def main(argv: list[str]) -> None:
    """``python hack/devenv/sesaccount.py PORT [unlimited] [HOST]``: the stub as its own process.

    The stack and node mode run it ``unlimited`` (no quota); node mode on ``0.0.0.0`` for Pods.
    """
    stub = AccountStub(UNLIMITED_ACCOUNT if "unlimited" in argv[2:] else None)
    host = next((a for a in argv[2:] if a != "unlimited"), "127.0.0.1")
    web.run_app(stub.app(), host=host, port=int(argv[1]), print=None)


if __name__ == "__main__":
    import sys

    main(sys.argv)
