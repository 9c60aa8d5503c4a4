"""What a load reads besides the rows (the S3 list, SES's account suppression list), and why it failed.

Large lists (``recipients.s3`` in the EmailPlan) never pass through the
operator or an HTTP upload: the data plane reads the object itself in chunks,
so memory stays flat however long the list is, and parses it with the same
reader as every other intake (``emailplan.sender.api.uploads.read_rows``).

Every load also reads the SES account-level suppression list (v2
``ListSuppressedDestinations``, page by page): SES would drop those addresses anyway and
count them as bounces against the account, so they are stored ``suppressed`` with the
reason ``account list (BOUNCE)`` and never sent. A list that cannot be read fails the load
(transiently, retried): loading without it would mail addresses the account suppresses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from emailplan.contract.addresses import AddressError, normalize_address
from emailplan.contract.plans import LoadFailure, LoadFailureReason
from emailplan.contract.recipients import EmptyListError, ListError
from emailplan.sender.settings import SenderSettings

CHUNK_BYTES = 256 * 1024
ACCOUNT_LIST_PAGE = 1000  # SES's largest page of ListSuppressedDestinations
_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
}


@contextlib.asynccontextmanager
async def s3_chunks(
    settings: SenderSettings, *, bucket: str, key: str
) -> AsyncIterator[AsyncIterator[bytes]]:
    """The bytes of ``s3://bucket/key`` as they stream in (the body is closed on exit)."""
    session = get_session()
    async with session.create_client(
        "s3", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url
    ) as s3:
        answer = await s3.get_object(Bucket=bucket, Key=key)
        body = answer["Body"]
        try:
            yield _iterate(body)
        finally:
            body.close()


class AccountListUnavailableError(Exception):
    """The account's suppression list could not be read (the load must wait: SES may be down)."""


def account_reason(reason: object) -> str:
    """The stored reason of an address the account suppresses: ``account list (BOUNCE)``."""
    return f"account list ({str(reason or 'UNKNOWN').upper()})"


def account_key(address: str) -> str:
    """How an address is matched against the account list: its stored form, case ignored."""
    try:
        return normalize_address(address).lower()
    except AddressError:
        return address.strip().lower()


async def account_suppressions(settings: SenderSettings) -> dict[str, str]:
    """Every address on the SES account-level suppression list, by :func:`account_key`, with its reason.

    Reads all pages (``NextToken``); any error is :class:`AccountListUnavailableError`,
    never a partial list.
    """
    endpoint = settings.ses_account_endpoint_url or settings.ses_endpoint_url or settings.aws_endpoint_url
    found: dict[str, str] = {}
    try:
        async with get_session().create_client(
            "sesv2", region_name=settings.aws_region, endpoint_url=endpoint
        ) as ses:
            token: str | None = None
            while True:
                page = {"PageSize": ACCOUNT_LIST_PAGE, **({"NextToken": token} if token else {})}
                answer = await ses.list_suppressed_destinations(**page)
                for item in answer.get("SuppressedDestinationSummaries", []):
                    found[account_key(str(item.get("EmailAddress", "")))] = account_reason(item.get("Reason"))
                token = answer.get("NextToken")
                if not token:
                    return found
    except (BotoCoreError, ClientError) as exc:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        raise AccountListUnavailableError(
            f"the SES account suppression list could not be read ({code or type(exc).__name__}); "
            "the load is retried"
        ) from exc


async def _iterate(body: Any) -> AsyncIterator[bytes]:
    while True:
        chunk = await body.read(CHUNK_BYTES)
        if not chunk:
            return
        yield bytes(chunk)


def failure(exc: BaseException, bucket: str, key: str) -> LoadFailure:
    """The reason a load failed, for the plan's ``LoadFailed`` condition (never a credential).

    ``permanent`` when the same object read again must fail the same way (missing,
    forbidden, not a list, empty); network errors, 5xx and throttling are transient.
    """
    if isinstance(exc, AccountListUnavailableError):
        return LoadFailure(reason=LoadFailureReason.SUPPRESSION_LIST_UNAVAILABLE, message=str(exc))
    where = f"s3://{bucket}/{key}"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            return LoadFailure(
                reason=LoadFailureReason.OBJECT_MISSING,
                message=f"{where} does not exist ({code})",
                permanent=True,
            )
        if code in _DENIED:
            return LoadFailure(
                reason=LoadFailureReason.ACCESS_DENIED,
                message=f"the data plane may not read {where} ({code}): grant it s3:GetObject",
                permanent=True,
            )
        return LoadFailure(reason=LoadFailureReason.UNAVAILABLE, message=f"reading {where} failed: {code}")
    if isinstance(exc, EmptyListError):  # before ListError, which it is a kind of
        return LoadFailure(
            reason=LoadFailureReason.EMPTY_LIST, message=f"{where} holds no recipient rows", permanent=True
        )
    if isinstance(exc, ListError):
        return LoadFailure(
            reason=LoadFailureReason.NOT_A_LIST,
            message=f"{where} is not a recipient list: {exc}",
            permanent=True,
        )
    if isinstance(exc, BotoCoreError):
        return LoadFailure(reason=LoadFailureReason.UNAVAILABLE, message=f"reading {where} failed: {exc}")
    return LoadFailure(
        reason=LoadFailureReason.UNAVAILABLE, message=f"reading {where} failed: {type(exc).__name__}"
    )
