"""schemathesis hooks for tests/test_api_schema.py (loaded through SCHEMATHESIS_HOOKS; no tests here).

Teaches schemathesis to send NDJSON bodies: the upload endpoint documents its
NDJSON body as a string, so whatever is generated is sent as text.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return (json.dumps(value) + "\n").encode()
