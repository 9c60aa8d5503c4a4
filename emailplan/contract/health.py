"""What the data plane depends on, and how it tells the operator that one of them is down.

An outage must be visible on the EmailPlan (``DataPlaneAvailable=False``, the reason
naming what is down), not only in a log. The data plane knows what it depends on: the
API reports the health of the database, the work queue (SQS) and SES in its plan view
and ``/readyz``; when the database is down it cannot read the plan at all, so its 503
answer names the dependency in the error body (``{"error": {"message", "dependency"}}``).
The operator adds the one thing only it can see: the API itself not answering.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

ERROR_DEPENDENCY_KEY = "dependency"  # the key of a 503 error body that names what is down


class Dependency(StrEnum):
    """A part a plan needs to make progress; the value is the wire name."""

    API = "api"  # the data-plane API itself (only the operator sees it down)
    DATABASE = "database"
    QUEUE = "queue"
    SES = "ses"

    @property
    def reason(self) -> str:
        """The condition reason and Event reason of an outage of this part."""
        return _REASONS[self]

    @property
    def words(self) -> str:
        """The part, for a person reading ``kubectl get eplan``."""
        return _WORDS[self]


_REASONS = {
    Dependency.API: "DataPlaneUnreachable",
    Dependency.DATABASE: "DatabaseUnavailable",
    Dependency.QUEUE: "QueueUnavailable",
    Dependency.SES: "SesUnavailable",
}
_WORDS = {
    Dependency.API: "the data-plane API",
    Dependency.DATABASE: "the database (PostgreSQL)",
    Dependency.QUEUE: "the work queue (SQS)",
    Dependency.SES: "SES",
}


class DependencyHealth(BaseModel):
    """One dependency as the API last saw it; ``since`` is when that state began."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)

    dependency: Dependency
    available: bool
    since: datetime | None = None
    message: str = ""  # what went wrong, without hosts or credentials
