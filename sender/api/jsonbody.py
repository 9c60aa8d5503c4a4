"""The one way an endpoint reads a JSON body: bounded in size and depth, every failure a 400.

Size is checked while reading (413 as soon as the limit is passed), depth and
syntax by :mod:`emailplan.contract.jsonbounds`, and text PostgreSQL cannot store
(NUL, lone surrogates) by :mod:`emailplan.contract.textcheck`. Each refusal is
an :class:`ApiError` whose message names the problem, so a client mistake never
becomes a 500.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from emailplan.contract import jsonbounds, textcheck
from emailplan.sender.api.errors import ApiError, read_body

M = TypeVar("M", bound=BaseModel)


def decode(raw: bytes, *, field: str = "body") -> Any:
    """Parse ``raw`` as JSON or raise a 400 naming the problem (syntax, encoding, depth, text)."""
    try:
        value = jsonbounds.loads(raw)
    except jsonbounds.JsonBoundsError as exc:
        raise ApiError(400, f"{field} is not acceptable JSON: {exc.msg}", field) from exc
    bad = textcheck.find_bad_text(value)
    if bad is not None:
        raise ApiError(400, textcheck.MESSAGE, safe_field(bad))
    return value


def safe_field(path: str) -> str:
    """A field path fit to echo back (it may contain the offending key itself)."""
    return path.encode("utf-8", "replace").decode("utf-8").replace("\x00", "?")[:200]


async def read_json(request: web.Request, limit: int) -> Any:
    """The request's JSON body of at most ``limit`` bytes, decoded (400/413 otherwise)."""
    return decode(await read_body(request, limit))


async def read_object(request: web.Request, limit: int, example: str = "{...}") -> dict[str, Any]:
    """The request's body as a JSON object; anything else is a 400 showing ``example``."""
    body = await read_json(request, limit)
    if not isinstance(body, dict):
        raise ApiError(400, f"body must be a JSON object like {example}", "body")
    return body


def validation_error(exc: ValidationError) -> ApiError:
    """The first problem pydantic found, as a 400 naming the field."""
    first = exc.errors()[0]
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.get("loc", ())).lstrip(".")
    message = str(first.get("msg", "invalid value"))
    return ApiError(400, message, safe_field(field) if field else None)


async def read_model(request: web.Request, limit: int, model: type[M]) -> M:
    """Read a JSON object of at most ``limit`` bytes and validate it as ``model``."""
    body = await read_object(request, limit)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc
