"""The per-plan SQS work queue: ``emailplan-<planId>`` with DLQ ``emailplan-<planId>-dlq``.

A queue message carries up to ``contract.plans.IDS_PER_QUEUE_MESSAGE`` ledger message ids
(``{"plan", "ids"}``, written by ``store.loading.complete_recipients``), so a million recipients is
ten thousand SQS messages
(SQS operations get slow with many messages, and each request costs money). SQS only says *what to look at*;
the ledger claim decides what is sent, so at-least-once delivery never becomes
a duplicate email. Work that cannot be processed is moved to the DLQ with its
reason (message attribute and log line); repeated crashes land there by
redrive after ``MAX_RECEIVES``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from emailplan.sender.settings import SenderSettings

log = logging.getLogger(__name__)

MAX_RECEIVES = 5
MAX_IDS = 1000  # what a worker accepts in one message (more than the ledger writes: older messages)
SQS_BATCH = 10


def queue_name(plan_id: uuid.UUID | str, dlq: bool = False) -> str:
    return f"emailplan-{plan_id}" + ("-dlq" if dlq else "")


@dataclass(frozen=True)
class Job:
    """One received queue message: the ids to look at and the handle to ack it."""

    receipt: str
    ids: tuple[int, ...]
    sqs_message_id: str
    receive_count: int


class BadJobError(ValueError):
    """A queue message whose body is not work for this plan."""


def parse_body(body: str, plan_id: uuid.UUID) -> tuple[int, ...]:
    """The ids in a message body, or ``BadJobError`` saying why it is not valid work."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise BadJobError(f"body is not JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or str(data.get("plan")) != str(plan_id):
        raise BadJobError("body is not work for this plan")
    ids = data.get("ids")
    if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS:
        raise BadJobError(f"ids must be a list of 1..{MAX_IDS} message ids")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
        raise BadJobError("ids must be positive integers")
    return tuple(ids)


class WorkQueue:
    """SQS operations for plan queues (implements ``store.plans.QueueSink``)."""

    def __init__(self, client: Any, visibility_timeout: int = 300) -> None:
        self._sqs = client
        self._visibility = visibility_timeout
        self._urls: dict[str, str] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: SenderSettings) -> AsyncIterator[WorkQueue]:
        """A WorkQueue with its own SQS client (endpoint and region from settings)."""
        session = get_session()
        config = Config(retries={"max_attempts": 8, "mode": "adaptive"}, max_pool_connections=20)
        async with session.create_client(
            "sqs", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url, config=config
        ) as client:
            yield cls(client, visibility_timeout=max(30, int(settings.lease_seconds)))

    async def ping(self) -> None:
        """Raise unless SQS answers (the API's dependency probe): one cheap ListQueues call."""
        await self._sqs.list_queues(MaxResults=1)

    async def ensure(self, plan_id: uuid.UUID) -> str:
        """Create the plan's queue and DLQ (idempotent); returns the queue URL."""
        name = queue_name(plan_id)
        if name in self._urls:
            return self._urls[name]
        dlq_url = (
            await self._sqs.create_queue(
                QueueName=queue_name(plan_id, dlq=True), Attributes={"MessageRetentionPeriod": "1209600"}
            )
        )["QueueUrl"]
        dlq_arn = (await self._sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)})
        url = (
            await self._sqs.create_queue(
                QueueName=name,
                Attributes={
                    "RedrivePolicy": redrive,
                    "VisibilityTimeout": str(self._visibility),
                    "MessageRetentionPeriod": "1209600",
                },
            )
        )["QueueUrl"]
        self._urls[name] = url
        self._urls[queue_name(plan_id, dlq=True)] = dlq_url
        return str(url)

    async def url(self, plan_id: uuid.UUID, dlq: bool = False) -> str | None:
        """The queue URL, or None while the plan has no queue yet."""
        name = queue_name(plan_id, dlq)
        if name not in self._urls:
            try:
                self._urls[name] = (await self._sqs.get_queue_url(QueueName=name))["QueueUrl"]
            except ClientError as exc:
                if "NonExistentQueue" in str(exc.response.get("Error", {}).get("Code", "")):
                    return None
                raise
        return self._urls[name]

    async def enqueue(self, plan_id: uuid.UUID, batches: Sequence[Sequence[int]]) -> None:
        """Send id batches (≤ IDS_PER_QUEUE_MESSAGE ids each), 10 per SendMessageBatch.

        Failed entries are retried, then raised.
        """
        url = await self.ensure(plan_id)
        plan = str(plan_id)
        for start in range(0, len(batches), SQS_BATCH):
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": json.dumps({"plan": plan, "ids": list(ids)}, separators=(",", ":")),
                }
                for i, ids in enumerate(batches[start : start + SQS_BATCH])
                if ids
            ]
            for attempt in range(3):
                if not entries:
                    break
                answer = await self._sqs.send_message_batch(QueueUrl=url, Entries=entries)
                failed = {f["Id"] for f in answer.get("Failed", [])}
                entries = [e for e in entries if e["Id"] in failed]
                if entries and attempt == 2:
                    raise RuntimeError(f"SQS refused {len(entries)} work messages for plan {plan}")

    async def purge(self, plan_id: uuid.UUID) -> None:
        """Drop all queued work (stop). SQS allows one purge a minute; a purge in progress is fine."""
        url = await self.url(plan_id)
        if url is None:
            return
        try:
            await self._sqs.purge_queue(QueueUrl=url)
        except ClientError as exc:
            if "PurgeQueueInProgress" not in str(exc.response.get("Error", {}).get("Code", "")):
                raise

    async def receive(
        self,
        plan_id: uuid.UUID,
        *,
        wait_seconds: int = 20,
        visibility: int | None = None,
        max_messages: int = SQS_BATCH,
    ) -> list[Job]:
        """Long-poll for work; bad bodies go to the DLQ with their reason and are not returned."""
        url = await self.url(plan_id)
        if url is None:
            return []
        args: dict[str, Any] = {
            "QueueUrl": url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        }
        if visibility is not None:
            args["VisibilityTimeout"] = visibility
        answer = await self._sqs.receive_message(**args)
        jobs: list[Job] = []
        for msg in answer.get("Messages", []):
            try:
                ids = parse_body(msg.get("Body", ""), plan_id)
            except BadJobError as exc:
                await self.dead_letter(plan_id, msg, str(exc))
                continue
            count = int(msg.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            jobs.append(
                Job(
                    receipt=msg["ReceiptHandle"],
                    ids=ids,
                    sqs_message_id=msg["MessageId"],
                    receive_count=count,
                )
            )
        return jobs

    async def delete(self, plan_id: uuid.UUID, receipts: Sequence[str]) -> None:
        """Acknowledge finished work."""
        url = await self.url(plan_id)
        for start in range(0, len(receipts), SQS_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts[start : start + SQS_BATCH])
            ]
            await self._sqs.delete_message_batch(QueueUrl=url, Entries=entries)

    async def retry_later(self, plan_id: uuid.UUID, receipts: Sequence[str], delay: int = 0) -> None:
        """Make work visible again after ``delay`` seconds (released on shutdown, or not claimable yet)."""
        url = await self.url(plan_id)
        for start in range(0, len(receipts), SQS_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": delay}
                for i, r in enumerate(receipts[start : start + SQS_BATCH])
            ]
            await self._sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)

    async def dead_letter(self, plan_id: uuid.UUID, msg: dict[str, Any], reason: str) -> None:
        """Move one message to the DLQ with ``reason`` attached, and log why."""
        log.error(
            "work message moved to dead-letter queue",
            extra={"plan": str(plan_id), "sqs_message_id": msg.get("MessageId"), "reason": reason},
        )
        dlq = await self.url(plan_id, dlq=True)
        if dlq is not None:
            await self._sqs.send_message(
                QueueUrl=dlq,
                MessageBody=msg.get("Body", "") or "(empty)",
                MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:1000]}},
            )
        url = await self.url(plan_id)
        await self._sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])

    async def depth(self, plan_id: uuid.UUID) -> tuple[int, int]:
        """(visible, in flight) messages: the queue lag the worker exports as a metric."""
        url = await self.url(plan_id)
        if url is None:
            return 0, 0
        attrs = (
            await self._sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )
        )["Attributes"]
        return int(attrs.get("ApproximateNumberOfMessages", 0)), int(
            attrs.get("ApproximateNumberOfMessagesNotVisible", 0)
        )
