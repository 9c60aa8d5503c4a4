"""Read a recipient list from S3 as a byte stream, and say in words why it could not be read.

Large lists (``recipients.s3`` in the EmailPlan) never pass through the
operator or an HTTP upload: the data plane reads the object itself in chunks,
so memory stays flat however long the list is, and parses it with the same
reader as every other intake (``emailplan.sender.api.uploads.read_rows``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from emailplan.contract.plans import LoadFailure, LoadFailureReason
from emailplan.contract.recipients import EmptyListError, ListError
from emailplan.sender.settings import SenderSettings

CHUNK_BYTES = 256 * 1024
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
