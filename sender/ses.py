"""SES v2 SendEmail (Raw) over aiohttp, signed with botocore's SigV4 signer.

The generic botocore pipeline (parameter validation, serialization, event
hooks, retries) costs more CPU per call than everything else the worker does;
SendEmail is one JSON POST, so we build it ourselves and keep what matters:
botocore's credential chain (env, profile, IRSA web identity, with refresh)
and its signer. Errors are classified for the worker: throttling (slow down
and retry, never a failure), permanent (the message fails with the reason),
transient (retry with backoff). Quota reads are rare and use the plain client.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from base64 import b64encode
from types import TracebackType
from typing import Any

import aiohttp
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from emailplan.sender.rendering import RenderedEmail
from emailplan.sender.settings import SenderSettings

THROTTLE_CODES = frozenset(
    {
        "TooManyRequestsException",
        "Throttling",
        "ThrottlingException",
        "LimitExceededException",
        "MaxSendingRateExceeded",
    }
)
PERMANENT_CODES = frozenset(
    {
        "MessageRejected",
        "BadRequestException",
        "MailFromDomainNotVerifiedException",
        "NotFoundException",
        "InvalidParameterValue",
        "ConfigurationSetDoesNotExist",
        "AccountSuspendedException",
        "SendingPausedException",
    }
)


class SesError(Exception):
    """A send that did not succeed; ``code`` is the SES error code, ``message`` its text."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status


class SesThrottledError(SesError):
    """Over the account's sending rate: slow down and retry; never counts as a failure."""


class SesPermanentError(SesError):
    """SES refused this message (or the account cannot send): record ``failed`` with the reason."""


class SesTransientError(SesError):
    """Network trouble or a 5xx: retry with backoff up to the attempt limit."""


def _error_code(headers: Any, body: bytes) -> tuple[str, str]:
    code = str(headers.get("x-amzn-ErrorType", "") or "")
    message = ""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        data = {}
    if isinstance(data, dict):
        code = code or str(data.get("__type") or data.get("code") or data.get("Code") or "")
        message = str(data.get("message") or data.get("Message") or "")
    if not code and body.lstrip().startswith(b"<"):
        match = re.search(rb"<Code>([^<]+)</Code>", body)
        code = match.group(1).decode() if match else ""
        found = re.search(rb"<Message>([^<]*)</Message>", body)
        message = found.group(1).decode() if found else message
    code = code.split(":")[0].split("#")[-1]
    return code, message[:500]


def classify(status: int, code: str, message: str) -> SesError:
    """Map an HTTP status and SES error code to the worker's three kinds of failure."""
    if status == 429 or code in THROTTLE_CODES or "rate exceeded" in message.lower():
        return SesThrottledError(code or "TooManyRequestsException", message, status)
    if code in PERMANENT_CODES or (400 <= status < 500 and status not in (401, 403, 408)):
        return SesPermanentError(code or f"HTTP{status}", message, status)
    return SesTransientError(code or f"HTTP{status}", message, status)


class SesClient:
    """Async SES v2 sender for one process; use as ``async with SesClient(settings) as ses``."""

    def __init__(self, settings: SenderSettings, *, max_connections: int = 64) -> None:
        self._region = settings.aws_region
        endpoint = (
            settings.ses_endpoint_url
            or settings.aws_endpoint_url
            or f"https://email.{self._region}.amazonaws.com"
        )
        self._endpoint = endpoint.rstrip("/")
        self._url = f"{self._endpoint}/v2/email/outbound-emails"
        self._aws_endpoint = settings.aws_endpoint_url
        self._max_connections = max_connections
        self._botocore = botocore.session.get_session()
        self._credentials = self._botocore.get_credentials()
        if self._credentials is None:
            raise RuntimeError("no AWS credentials found (environment, profile or web identity)")
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SesClient:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=30, connect=5),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.close()

    def _signed_headers(self, method: str, url: str, body: bytes, content_type: str) -> dict[str, str]:
        request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": content_type})
        SigV4Auth(self._credentials.get_frozen_credentials(), "ses", self._region).add_auth(request)
        return dict(request.headers.items())

    async def send(self, email: RenderedEmail) -> str:
        """Send one rendered message; returns the SES MessageId or raises a ``SesError`` kind."""
        payload: dict[str, Any] = {
            "FromEmailAddress": email.from_address,
            "Content": {"Raw": {"Data": b64encode(email.raw).decode("ascii")}},
        }
        if email.tags:
            payload["EmailTags"] = [{"Name": k, "Value": v} for k, v in email.tags.items()]
        if email.configuration_set:
            payload["ConfigurationSetName"] = email.configuration_set
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = self._signed_headers("POST", self._url, body, "application/json")
        assert self._http is not None, "use SesClient as an async context manager"
        try:
            async with self._http.post(self._url, data=body, headers=headers) as response:
                answer = await response.read()
                status = response.status
                response_headers = response.headers
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SesTransientError(type(exc).__name__, str(exc)[:200]) from exc
        if status == 200:
            try:
                return str(json.loads(answer)["MessageId"])
            except (ValueError, KeyError, TypeError) as exc:
                raise SesTransientError("BadResponse", "SES answered 200 without a MessageId") from exc
        code, message = _error_code(response_headers, answer)
        raise classify(status, code, message)

    async def max_send_rate(self) -> float | None:
        """The account's MaxSendRate (SES v1 GetSendQuota; moto implements it), or None if unknown."""
        url = (self._aws_endpoint or f"https://email.{self._region}.amazonaws.com").rstrip("/") + "/"
        body = b"Action=GetSendQuota&Version=2010-12-01"
        headers = self._signed_headers("POST", url, body, "application/x-www-form-urlencoded; charset=utf-8")
        assert self._http is not None, "use SesClient as an async context manager"
        try:
            async with self._http.post(url, data=body, headers=headers) as response:
                if response.status != 200:
                    return None
                text = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None
        try:
            root = ET.fromstring(text)  # noqa: S314 - SES's own response
        except ET.ParseError:
            return None
        for element in root.iter():
            if element.tag.endswith("MaxSendRate") and element.text:
                rate = float(element.text)
                return rate if rate > 0 else None
        return None
