"""A local SES v2 endpoint for the bulk path: CreateEmailTemplate and SendBulkEmail.

moto implements neither call (AWS-NOTES), so tests of ``ses.sendApi: bulk`` send here. It
speaks the SES v2 REST-JSON wire format: request bodies are checked against botocore's own
sesv2 service model (a field or shape our sender gets wrong is a 400 BadRequestException, as
SES answers), unsigned calls are refused, a second CreateEmailTemplate of one name is
``AlreadyExistsException``, and SendBulkEmail answers one ``BulkEmailEntryResults`` item per
entry. It renders what SES would deliver (Handlebars substitutions: ``{{{x}}}`` as is,
``{{x}}`` HTML-escaped, dotted paths) so tests judge what a recipient receives.

Some addresses provoke SES's per-entry statuses: an address starting ``reject`` is
``MESSAGE_REJECTED``; one starting ``throttle`` is ``ACCOUNT_THROTTLED`` on its first send.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import botocore.session
from aiohttp import web
from botocore.validate import ParamValidator

from devenv.ports import free_port

_MODEL = botocore.session.get_session().get_service_model("sesv2")
_VAR = re.compile(r"\{\{\{\s*([\w.]+)\s*\}\}\}|\{\{\s*([\w.]+)\s*\}\}")


def _lookup(data: dict[str, Any], path: str) -> str:
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def render(template: str, data: dict[str, Any]) -> str:
    """Fill a template as SES (Handlebars) does for plain substitutions."""

    def repl(match: re.Match[str]) -> str:
        if match.group(1):
            return _lookup(data, match.group(1))
        return html.escape(_lookup(data, match.group(2)), quote=True)

    return _VAR.sub(repl, template)


@dataclass
class Delivered:
    """One email as SES would send it to one recipient."""

    to: str
    sender: str
    subject: str
    html: str | None
    text: str | None
    headers: dict[str, str]
    tags: dict[str, str]
    message_id: str


@dataclass
class SesBulkStub:
    """The endpoint, run on its own thread and loop; ``url`` is its address."""

    url: str = ""
    templates: dict[str, dict[str, str]] = field(default_factory=dict)
    delivered: list[Delivered] = field(default_factory=list)
    template_creates: int = 0
    bulk_calls: int = 0
    entries: list[int] = field(default_factory=list)  # entries per call
    _throttled: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def _refuse(self, code: str, message: str, status: int = 400) -> web.Response:
        return web.json_response({"message": message}, status=status, headers={"x-amzn-ErrorType": code})

    def _checked(self, operation: str, body: dict[str, Any]) -> str | None:
        report = ParamValidator().validate(body, _MODEL.operation_model(operation).input_shape)
        return report.generate_report() if report.has_errors() else None

    async def _create_template(self, request: web.Request) -> web.Response:
        if "Authorization" not in request.headers:
            return self._refuse("BadRequestException", "missing signature")
        body = await request.json()
        if problem := self._checked("CreateEmailTemplate", body):
            return self._refuse("BadRequestException", problem)
        with self._lock:
            self.template_creates += 1
            if body["TemplateName"] in self.templates:
                return self._refuse("AlreadyExistsException", "template exists")
            self.templates[body["TemplateName"]] = body["TemplateContent"]
        return web.json_response({})

    async def _send_bulk(self, request: web.Request) -> web.Response:
        if "Authorization" not in request.headers:
            return self._refuse("BadRequestException", "missing signature")
        body = await request.json()
        if problem := self._checked("SendBulkEmail", body):
            return self._refuse("BadRequestException", problem)
        entries = body["BulkEmailEntries"]
        if not 1 <= len(entries) <= 50:
            return self._refuse("BadRequestException", "BulkEmailEntries must hold 1 to 50 entries")
        default = body["DefaultContent"]["Template"]
        results = []
        with self._lock:
            self.bulk_calls += 1
            self.entries.append(len(entries))
            template = self.templates.get(default["TemplateName"])
            for item in entries:
                to = item["Destination"]["ToAddresses"][0]
                address = to.rsplit("<", 1)[-1].rstrip(">")
                if template is None:
                    results.append({"Status": "TEMPLATE_NOT_FOUND", "Error": "no such template"})
                elif address.startswith("reject"):
                    results.append({"Status": "MESSAGE_REJECTED", "Error": "Email address is not verified."})
                elif address.startswith("throttle") and address not in self._throttled:
                    self._throttled.add(address)
                    results.append({"Status": "ACCOUNT_THROTTLED", "Error": "Maximum sending rate exceeded."})
                else:
                    results.append({"Status": "SUCCESS", "MessageId": self._deliver(body, item, template)})
        return web.json_response({"BulkEmailEntryResults": results})

    def _deliver(self, body: dict[str, Any], item: dict[str, Any], template: dict[str, str]) -> str:
        default = body["DefaultContent"]["Template"]
        data = json.loads(default.get("TemplateData") or "{}")
        replacement = item.get("ReplacementEmailContent", {}).get("ReplacementTemplate", {})
        data.update(json.loads(replacement.get("ReplacementTemplateData") or "{}"))
        headers = {h["Name"]: h["Value"] for h in default.get("Headers", [])}
        headers.update({h["Name"]: h["Value"] for h in item.get("ReplacementHeaders", [])})
        tags = {t["Name"]: t["Value"] for t in body.get("DefaultEmailTags", [])}
        tags.update({t["Name"]: t["Value"] for t in item.get("ReplacementTags", [])})
        message_id = f"bulk-{uuid.uuid4().hex}"
        self.delivered.append(
            Delivered(
                to=item["Destination"]["ToAddresses"][0],
                sender=body["FromEmailAddress"],
                subject=render(template["Subject"], data),
                html=render(template["Html"], data) if "Html" in template else None,
                text=render(template["Text"], data) if "Text" in template else None,
                headers=headers,
                tags=tags,
                message_id=message_id,
            )
        )
        return message_id

    def start(self) -> SesBulkStub:
        port = free_port()
        ready = threading.Event()
        app = web.Application()
        app.router.add_post("/v2/email/templates", self._create_template)
        app.router.add_post("/v2/email/outbound-bulk-emails", self._send_bulk)

        async def serve() -> None:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            ready.set()
            await asyncio.Event().wait()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(serve())
            except RuntimeError:
                pass  # the loop was stopped

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def received_by(self) -> dict[str, list[Delivered]]:
        with self._lock:
            out: dict[str, list[Delivered]] = {}
            for d in self.delivered:
                out.setdefault(d.to.rsplit("<", 1)[-1].rstrip(">"), []).append(d)
            return out
