"""Errors of the outside world that the worker's loops survive by retrying.

A database restart, a network blip or an AWS error must never end a worker: each
loop logs, waits and tries again. One tuple, so every part agrees on what an outage is.
"""

from __future__ import annotations

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.exc import SQLAlchemyError

OUTAGE = (SQLAlchemyError, OSError, BotoCoreError, ClientError, aiohttp.ClientError, TimeoutError)
