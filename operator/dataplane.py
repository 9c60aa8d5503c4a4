"""Client of the data-plane administration API (docs/architecture.md), one aiohttp session per process.

Errors are split the way the reconciler needs them: ``DataPlaneRejected`` (4xx:
the plan itself is wrong, retrying will not help, tell the user) versus
``DataPlaneUnavailable`` (network, 5xx: retry later). The API key travels only
in the ``x-api-key`` header and is never part of an error message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
from pydantic import SecretStr

from emailplan.contract.followups import FromPlanSource, RetryRequest, RetryResult
from emailplan.contract.health import ERROR_DEPENDENCY_KEY, Dependency
from emailplan.contract.httpapi import (
    GET_PLAN,
    LOAD_FROM_PLAN,
    LOAD_S3,
    PUT_PLAN,
    RETRY_PLAN,
    STOP_PLAN,
    UPLOAD_RECIPIENTS,
)
from emailplan.contract.plans import LoadJob, PlanPayload, PlanView, S3Source
from emailplan.contract.route import Route

log = logging.getLogger(__name__)


class DataPlaneError(Exception):
    """Any failure talking to the data plane."""


class DataPlaneUnavailable(DataPlaneError):
    """Network error or a 5xx answer: worth retrying.

    ``dependency`` is what is down: the API itself when it did not answer (or answered
    a 5xx without saying why), else what its typed 503 body names (the database, SQS).
    """

    def __init__(self, message: str, dependency: Dependency = Dependency.API) -> None:
        super().__init__(message)
        self.dependency = dependency


class DataPlaneRejected(DataPlaneError):
    """A 4xx answer: the request (the plan) is wrong."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body


async def _iterate(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class DataPlane:
    """Typed calls of the administration API; create once and ``close()`` at shutdown."""

    def __init__(self, base_url: str, api_key: SecretStr, *, timeout: float = 30.0) -> None:
        self._base = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"x-api-key": self._api_key.get_secret_value()},
                connector=aiohttp.TCPConnector(limit=20),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        route: Route,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        content_type: str | None = None,
        allow_404: bool = False,
    ) -> Any:
        headers = {"content-type": content_type} if content_type else None
        method = route.method
        try:
            async with self._client().request(
                method, self._base + path, json=json_body, data=data, headers=headers
            ) as resp:
                text = await resp.text()
                body: Any
                try:
                    body = await resp.json(content_type=None) if text else None
                except ValueError:
                    body = text
                if resp.status == 404 and allow_404:
                    return None
                if resp.status >= 500:
                    raise DataPlaneUnavailable(
                        f"{method} {path}: HTTP {resp.status}: {_message(body, text)[:200]}",
                        _dependency(body),
                    )
                if resp.status >= 400:
                    raise DataPlaneRejected(resp.status, _message(body, text), body)
                return body
        except aiohttp.ClientError as exc:
            raise DataPlaneUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise DataPlaneUnavailable(f"{method} {path}: timed out") from exc

    async def put_plan(self, plan_id: str, plan: PlanPayload) -> PlanView:
        """Register or update the plan (idempotent by id); suspension rides in ``plan.suspended``."""
        body = await self._call(
            PUT_PLAN, PUT_PLAN.url(planId=plan_id), json_body=plan.model_dump(mode="json")
        )
        return PlanView.model_validate(body)

    async def get_plan(self, plan_id: str) -> PlanView | None:
        """The plan view (state, counts, load job), or None when the data plane does not know the plan."""
        body = await self._call(GET_PLAN, GET_PLAN.url(planId=plan_id), allow_404=True)
        return None if body is None else PlanView.model_validate(body)

    async def load_list(self, plan_id: str, chunks: Iterable[bytes], content_type: str) -> LoadJob:
        """Send the whole list; the data plane stores it, completes it and answers the load job."""
        body = await self._call(
            UPLOAD_RECIPIENTS,
            UPLOAD_RECIPIENTS.url({"complete": "true"}, planId=plan_id),
            data=_iterate(chunks),
            content_type=content_type,
        )
        return LoadJob.model_validate(body)

    async def load_s3(self, plan_id: str, source: S3Source) -> LoadJob:
        """Have the data plane load (and complete) the list from S3 itself, as a job."""
        body = await self._call(
            LOAD_S3, LOAD_S3.url(planId=plan_id), json_body=source.model_dump(mode="json")
        )
        return LoadJob.model_validate(body)

    async def load_from_plan(self, plan_id: str, source: FromPlanSource) -> LoadJob:
        """Have the data plane take a follow-up's audience from the source plan (idempotent)."""
        body = await self._call(
            LOAD_FROM_PLAN, LOAD_FROM_PLAN.url(planId=plan_id), json_body=source.model_dump(mode="json")
        )
        return LoadJob.model_validate(body)

    async def retry(self, plan_id: str, request: RetryRequest) -> RetryResult:
        """Re-queue a done plan's transient failures and soft bounces once for the generation."""
        body = await self._call(
            RETRY_PLAN, RETRY_PLAN.url(planId=plan_id), json_body=request.model_dump(mode="json")
        )
        return RetryResult.model_validate(body)

    async def stop(self, plan_id: str) -> None:
        """Stop the plan (a plan the data plane never knew needs nothing)."""
        await self._call(STOP_PLAN, STOP_PLAN.url(planId=plan_id), allow_404=True)


def _dependency(body: Any) -> Dependency:
    """What a 5xx body says is down (``{"error": {"dependency": "database"}}``), else the API itself."""
    err = body.get("error") if isinstance(body, dict) else None
    named = err.get(ERROR_DEPENDENCY_KEY) if isinstance(err, dict) else None
    try:
        return Dependency(named) if named else Dependency.API
    except ValueError:
        return Dependency.API


def _message(body: Any, text: str) -> str:
    """The human part of a JSON error body (``error``/``message``/``detail``), else the raw text."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # {"error": {"field", "message"}}
        err = body["error"]
        field = f"{err['field']}: " if err.get("field") else ""
        return f"{field}{err.get('message') or 'invalid request'}"
    if isinstance(body, dict):
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                errors = body.get("errors")
                if isinstance(errors, list) and errors:
                    return f"{value}: {errors[:5]}"
                return value
    return text[:500]
