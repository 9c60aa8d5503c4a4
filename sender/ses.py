"""SES v2 SendEmail (Raw) and SendBulkEmail over a lean HTTP/1.1 client, signed with AWS SigV4.

The generic botocore pipeline (parameter validation, serialization, event
hooks, retries) costs more CPU per call than everything else the worker does;
SendEmail is one JSON POST, so we build it ourselves and keep what matters:
botocore's credential chain (env, profile, IRSA web identity, with refresh).
Signing this one fixed request shape is done by ``SigV4`` below (the day's
signing key is cached; botocore's generic signer costs ~150 µs a call); a test
checks it produces exactly botocore's signature. The HTTP side is ``httppost.HttpPoster``
(one bytes write per request on kept-alive connections; aiohttp's general machinery cost
about a fifth of a raw worker's CPU). Errors are classified for the worker: throttling (slow down
and retry, never a failure), paused or suspended account (stop sending for a while, never a
failure), permanent (the message fails with the reason), transient (retry with backoff).
Quota reads are rare and use the plain client.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
import time
import xml.etree.ElementTree as ET
from base64 import b64encode
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import orjson

from emailplan.sender.httppost import HttpPoster
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
    }
)


# The account (or its configuration set) may not send at all right now: SES v2 names and the
# v1 (Query API) equivalents. No message is at fault, so none may fail: the worker stops
# sending for the plan and tries again after a long pause.
PAUSED_CODES = frozenset(
    {
        "SendingPausedException",
        "AccountSuspendedException",
        "AccountSendingPausedException",
        "ConfigurationSetSendingPausedException",
        "AccountSuspended",
        "SendingPaused",
    }
)
TRANSIENT_CODES = frozenset({"InternalFailure", "ServiceUnavailable"})


class SesError(Exception):
    """A send that did not succeed; ``code`` is the SES error code, ``message`` its text."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status


class SesThrottledError(SesError):
    """Over the account's sending rate: slow down and retry; never counts as a failure."""


class SesPausedError(SesError):
    """The account (or configuration set) is paused or suspended: stop sending, fail nothing."""


class SesPermanentError(SesError):
    """SES refused this message (or the account cannot send): record ``failed`` with the reason."""


class SesTransientError(SesError):
    """Network trouble or a 5xx: retry with backoff, up to the limit."""


def _error_code(headers: Mapping[str, str], body: bytes) -> tuple[str, str]:
    """SES's error code and message from a response (``headers`` with lower-cased names)."""
    code = str(headers.get("x-amzn-errortype", "") or "")
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
    """Map an HTTP status and SES error code to the worker's four kinds of failure."""
    if status == 429 or code in THROTTLE_CODES or "rate exceeded" in message.lower():
        return SesThrottledError(code or "TooManyRequestsException", message, status)
    if code in PAUSED_CODES:
        return SesPausedError(code, message, status)
    if code in TRANSIENT_CODES:
        return SesTransientError(code, message, status)
    if code in PERMANENT_CODES or (400 <= status < 500 and status not in (401, 403, 408)):
        return SesPermanentError(code or f"HTTP{status}", message, status)
    return SesTransientError(code or f"HTTP{status}", message, status)


# SendBulkEmail answers 200 with a status per entry; each maps to the worker's kinds of failure.
BULK_PAUSED = frozenset(
    {
        "ACCOUNT_SUSPENDED",
        "ACCOUNT_SENDING_PAUSED",
        "CONFIGURATION_SET_SENDING_PAUSED",
        "ACCOUNT_DAILY_QUOTA_EXCEEDED",  # nobody's message is at fault: hold the plan, fail none
    }
)
BULK_PERMANENT = frozenset(
    {
        "MESSAGE_REJECTED",
        "MAIL_FROM_DOMAIN_NOT_VERIFIED",
        "CONFIGURATION_SET_NOT_FOUND",
        "INVALID_SENDING_POOL_NAME",
        "INVALID_PARAMETER",
        "FAILED",
    }
)
# The stored template vanished (deleted by hand): transient, and the sender stores it again.
TEMPLATE_NOT_FOUND = "TEMPLATE_NOT_FOUND"


def entry_outcome(result: dict[str, Any]) -> SesError | str:
    """One BulkEmailEntryResult: its MessageId, or the error kind of its status."""
    status = str(result.get("Status") or "")
    error = str(result.get("Error") or "")[:500]
    if status == "SUCCESS":
        message_id = result.get("MessageId")
        if message_id:
            return str(message_id)
        return SesTransientError("BadResponse", "SUCCESS without a MessageId")
    if status == "ACCOUNT_THROTTLED":
        return SesThrottledError(status, error)
    if status in BULK_PAUSED:
        return SesPausedError(status, error)
    if status in BULK_PERMANENT:
        return SesPermanentError(status, error)
    return SesTransientError(status or "UnknownStatus", error)


_SIGNED = "content-type;host;x-amz-date"
_SIGNED_WITH_TOKEN = _SIGNED + ";x-amz-security-token"


def _trim(value: str) -> str:
    """A header value as SigV4 canonicalizes it (runs of whitespace become one space)."""
    return " ".join(value.split())


class SigV4:
    """AWS SigV4 for JSON/form POSTs to one service and region, with the day's key cached."""

    def __init__(self, service: str, region: str) -> None:
        self.service = service
        self.region = region
        self._key: tuple[str, str, bytes] | None = None  # (secret, date, key)

    def _signing_key(self, secret: str, date: str) -> bytes:
        if self._key is None or self._key[0] != secret or self._key[1] != date:
            key = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
            for part in (self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key = (secret, date, key)
        return self._key[2]

    def headers(
        self,
        *,
        access_key: str,
        secret_key: str,
        token: str | None,
        host: str,
        path: str,
        body: bytes,
        content_type: str,
        now: datetime.datetime | None = None,
    ) -> dict[str, str]:
        """Headers (Authorization, X-Amz-Date, token) for ``POST https://host/path`` with ``body``."""
        amz_date = now.strftime("%Y%m%dT%H%M%SZ") if now is not None else _amz_now()
        date = amz_date[:8]
        # The signed headers are always these, in this (sorted) order: the canonical request is
        # one string, not a sorted dict joined per call.
        signed = _SIGNED_WITH_TOKEN if token else _SIGNED
        token_line = f"x-amz-security-token:{_trim(token)}\n" if token else ""
        canonical = (
            f"POST\n{path}\n\ncontent-type:{_trim(content_type)}\nhost:{_trim(host)}\n"
            f"x-amz-date:{amz_date}\n{token_line}\n{signed}\n{hashlib.sha256(body).hexdigest()}"
        )
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.digest(self._signing_key(secret_key, date), to_sign.encode(), "sha256").hex()
        out = {
            "Content-Type": content_type,
            "X-Amz-Date": amz_date,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
            f"Signature={signature}",
        }
        if token:
            out["X-Amz-Security-Token"] = token
        return out


_amz_cache: tuple[int, str] = (0, "")


def _amz_now() -> str:
    """``X-Amz-Date`` of now, formatted once a second (every request of that second shares it)."""
    global _amz_cache
    now = int(time.time())
    if _amz_cache[0] != now:
        _amz_cache = (now, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)))
    return _amz_cache[1]


def host_of(url: str) -> tuple[str, str]:
    """(Host header value, path) of ``url`` as SigV4 signs them (port only when not the default)."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    if parts.port and parts.port != default:
        host = f"{host}:{parts.port}"
    return host, parts.path or "/"


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what one pool of connections serves."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


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
        self._timeout = settings.ses_timeout_seconds
        self._botocore = botocore.session.get_session()
        self._credentials = self._botocore.get_credentials()
        if self._credentials is None:
            raise RuntimeError("no AWS credentials found (environment, profile or web identity)")
        self._http: HttpPoster | None = None
        self._signer = SigV4("ses", self._region)
        self._send_host, self._send_path = host_of(self._url)
        self._bulk_url = f"{self._endpoint}/v2/email/outbound-bulk-emails"
        self._bulk_host = host_of(self._bulk_url)
        self._templates_url = f"{self._endpoint}/v2/email/templates"
        self._templates_host = host_of(self._templates_url)

    async def __aenter__(self) -> SesClient:
        # Keep-alive connections are reused (up to ``max_connections`` open, so no TCP or TLS
        # handshake per send).
        self._http = HttpPoster(origin_of(self._endpoint), limit=self._max_connections, timeout=self._timeout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.close()

    def _signed_headers(
        self, url: str, body: bytes, content_type: str, host_path: tuple[str, str] | None = None
    ) -> dict[str, str]:
        creds = self._credentials.get_frozen_credentials()
        host, path = host_path or host_of(url)
        return self._signer.headers(
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            token=creds.token,
            host=host,
            path=path,
            body=body,
            content_type=content_type,
        )

    async def _post(
        self, url: str, host_path: tuple[str, str], payload: dict[str, Any]
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One signed JSON POST: (status, response headers, body); network trouble is transient."""
        body = orjson.dumps(payload)
        headers = self._signed_headers(url, body, "application/json", host_path)
        assert self._http is not None, "use SesClient as an async context manager"
        try:
            answer = await self._http.post(host_path[1], body, headers)
        except (TimeoutError, OSError) as exc:
            raise SesTransientError(type(exc).__name__, str(exc)[:200]) from exc
        return answer.status, answer.headers, answer.body

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
        status, response_headers, answer = await self._post(
            self._url, (self._send_host, self._send_path), payload
        )
        if status == 200:
            try:
                return str(orjson.loads(answer)["MessageId"])
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise SesTransientError("BadResponse", "SES answered 200 without a MessageId") from exc
        code, message = _error_code(response_headers, answer)
        raise classify(status, code, message)

    async def create_template(self, name: str, content: dict[str, str]) -> None:
        """CreateEmailTemplate; a template of that name already there is fine (names are
        content-addressed, so an existing one has this content)."""
        status, response_headers, answer = await self._post(
            self._templates_url, self._templates_host, {"TemplateName": name, "TemplateContent": content}
        )
        if status == 200:
            return
        code, message = _error_code(response_headers, answer)
        if code == "AlreadyExistsException":
            return
        raise classify(status, code, message)

    async def send_bulk(self, payload: dict[str, Any]) -> list[SesError | str]:
        """SendBulkEmail: per entry, in order, the MessageId or the ``SesError`` kind of its status.

        A call refused as a whole (throttled, paused account, bad request) raises instead.
        """
        status, response_headers, answer = await self._post(self._bulk_url, self._bulk_host, payload)
        if status != 200:
            code, message = _error_code(response_headers, answer)
            raise classify(status, code, message)
        try:
            results = orjson.loads(answer)["BulkEmailEntryResults"]
            out = [entry_outcome(r) for r in results]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise SesTransientError("BadResponse", "SES answered 200 without entry results") from exc
        if len(out) != len(payload["BulkEmailEntries"]):
            raise SesTransientError("BadResponse", "SES answered a different number of entry results")
        return out

    async def unreachable(self) -> str | None:
        """Why SES cannot be reached (network error, 5xx), or None when it answers at all.

        A refusal (403: the role may not call GetSendQuota) still means SES is up, so only
        transport failures and server errors count: the API's dependency probe uses this.
        """
        url = self._endpoint + "/"  # where messages go (a separate SES endpoint, if set)
        body = b"Action=GetSendQuota&Version=2010-12-01"
        host_path = host_of(url)
        headers = self._signed_headers(
            url, body, "application/x-www-form-urlencoded; charset=utf-8", host_path
        )
        assert self._http is not None, "use SesClient as an async context manager"
        try:
            answer = await self._http.post(host_path[1], body, headers)
        except (TimeoutError, OSError, ValueError) as exc:  # ValueError: not an HTTP answer
            return f"cannot reach SES ({type(exc).__name__})"
        return f"SES answered HTTP {answer.status}" if answer.status >= 500 else None

    async def max_send_rate(self) -> float | None:
        """The account's MaxSendRate (SES v1 GetSendQuota; moto implements it), or None if unknown."""
        url = (self._aws_endpoint or f"https://email.{self._region}.amazonaws.com").rstrip("/") + "/"
        body = b"Action=GetSendQuota&Version=2010-12-01"
        headers = self._signed_headers(url, body, "application/x-www-form-urlencoded; charset=utf-8")
        poster = HttpPoster(origin_of(url), limit=1)  # once at start-up: its own connection
        try:
            answer = await poster.post(host_of(url)[1], body, headers)
        except (TimeoutError, OSError):
            return None
        finally:
            await poster.close()
        if answer.status != 200:
            return None
        text = answer.body
        try:
            root = ET.fromstring(text)  # noqa: S314 - SES's own response
        except ET.ParseError:
            return None
        for element in root.iter():
            if element.tag.endswith("MaxSendRate") and element.text:
                rate = float(element.text)
                return rate if rate > 0 else None
        return None
