"""The SES client's own SigV4 signer matches botocore's exactly; error classification table."""

from __future__ import annotations

import datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from emailplan.sender.ses import (
    SesPausedError,
    SesPermanentError,
    SesThrottledError,
    SesTransientError,
    SigV4,
    _error_code,
    classify,
    host_of,
)

NOW = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)


def botocore_headers(creds: Credentials, url: str, body: bytes, ctype: str) -> dict[str, str]:
    """Reference: botocore's signer with the same timestamp (its documented building blocks)."""
    auth = SigV4Auth(creds, "ses", "eu-west-1")
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": ctype})
    request.context["timestamp"] = NOW.strftime("%Y%m%dT%H%M%SZ")
    auth._modify_request_before_signing(request)
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    auth._inject_signature_to_request(request, signature)
    return dict(request.headers.items())


@pytest.mark.parametrize(
    ("url", "token"),
    [
        ("https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails", None),
        ("http://127.0.0.1:4566/v2/email/outbound-emails", "session-token"),
        ("https://email.eu-west-1.amazonaws.com:443/", None),
    ],
)
def test_signature_equals_botocore(url: str, token: str | None) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    body = b'{"FromEmailAddress":"a@example.com","Content":{"Raw":{"Data":"eA=="}}}'
    host, path = host_of(url)
    ours = SigV4("ses", "eu-west-1").headers(
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        token=token,
        host=host,
        path=path,
        body=body,
        content_type="application/json",
        now=NOW,
    )
    theirs = botocore_headers(creds, url, body, "application/json")
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours["X-Amz-Date"] == theirs["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token")


@pytest.mark.parametrize(
    ("status", "code", "message", "kind"),
    [
        (429, "TooManyRequestsException", "Maximum sending rate exceeded.", SesThrottledError),
        (400, "Throttling", "Maximum sending rate exceeded.", SesThrottledError),
        (400, "LimitExceededException", "", SesThrottledError),
        (400, "MessageRejected", "Email address is not verified.", SesPermanentError),
        (400, "BadRequestException", "", SesPermanentError),
        (400, "SendingPausedException", "Sending is paused for this account.", SesPausedError),
        (400, "AccountSuspendedException", "", SesPausedError),
        (400, "AccountSendingPausedException", "", SesPausedError),  # v1 (Query API)
        (400, "ConfigurationSetSendingPausedException", "", SesPausedError),  # v1, per configuration set
        (500, "InternalFailure", "", SesTransientError),
        (503, "ServiceUnavailable", "", SesTransientError),
        (403, "InvalidSignatureException", "", SesTransientError),
    ],
)
def test_classification(status: int, code: str, message: str, kind: type) -> None:
    assert type(classify(status, code, message)) is kind


def test_v1_query_error_body_is_parsed() -> None:
    body = (
        b'<ErrorResponse xmlns="http://ses.amazonaws.com/doc/2010-12-01/"><Error><Type>Sender</Type>'
        b"<Code>AccountSendingPausedException</Code><Message>Account is paused.</Message></Error>"
        b"</ErrorResponse>"
    )
    code, message = _error_code({}, body)
    assert (code, message) == ("AccountSendingPausedException", "Account is paused.")
    assert type(classify(400, code, message)) is SesPausedError
