"""schemathesis hooks for tests/test_api_schema.py (loaded through SCHEMATHESIS_HOOKS; no tests here).

Teaches schemathesis to send NDJSON bodies: the upload endpoint documents its
NDJSON body as a string, so whatever is generated is sent as text. Also adds deep and
wide variants of generated bodies, which must get a 4xx, never a 5xx.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from hypothesis import strategies as st


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return (json.dumps(value) + "\n").encode()


# Deep and wide bodies (issue 10): every JSON endpoint must answer them with a 4xx, never a 5xx.
# Deep stays under the JSON encoder's own recursion limit so the client can still send it;
# it is far beyond what the API accepts (emailplan.contract.jsonbounds.MAX_DEPTH).
DEPTH = 400
WIDTH = 20_000


def _deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


@schemathesis.hook
def flatmap_body(ctx: Any, body: Any) -> st.SearchStrategy[Any]:
    """Besides the generated body, sometimes the same body with a deep or a wide addition."""
    if isinstance(body, dict):
        wide = {**body, **{f"k{i}": i for i in range(WIDTH)}}
        return st.sampled_from([body, {**body, "deep": _deep(DEPTH)}, wide])
    if isinstance(body, str):
        deep_row = json.dumps({"email": "ann@example.com", "vars": {"deep": _deep(DEPTH)}})
        return st.sampled_from([body, f"{body}\n{deep_row}\n"])
    return st.just(body)
