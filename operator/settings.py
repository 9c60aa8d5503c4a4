"""Settings of the operator process, read once from ``EMAILPLAN_*`` environment variables.

One typed object so every knob is documented in one place; the API key and the
Sentry DSN are ``SecretStr`` so they never show up in a repr, a log line or an Event.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from emailplan.contract.plans import BACKLOG_PER_REPLICA, DEFAULT_RATE_PER_SECOND
from emailplan.runtime.startup import missing_secret

DEV_API_KEY = "dev-api-key-change-me"  # with dev_mode only; the data plane's development key


class OperatorSettings(BaseSettings):
    """Everything the operator reads from its environment (prefix ``EMAILPLAN_``)."""

    model_config = SettingsConfigDict(env_prefix="EMAILPLAN_", extra="ignore")

    # The data-plane administration API (docs/architecture.md).
    api_url: str = "http://emailplan-api:8080"
    # No usable default: without it the operator refuses to start (see _api_key_given).
    api_key: SecretStr = SecretStr("")
    dev_mode: bool = False  # EMAILPLAN_DEV_MODE=1: local runs may use the development API key
    api_timeout_seconds: float = 30.0
    # A deleted plan waits this long for an unreachable data plane to stop it, then its
    # finalizer is released anyway (with a Warning Event naming what the ledger keeps).
    deletion_timeout_seconds: float = Field(600.0, ge=0)

    # How often each plan's status is refreshed from the data plane (DESIGN: at most 10 s).
    status_interval_seconds: float = Field(5.0, gt=0, le=10)

    # Sender pods: image, where their secrets come from, and their size.
    sender_image: str = "ghcr.io/emailplan/emailplan:latest"
    sender_image_pull_policy: str = "IfNotPresent"
    # docker-registry Secrets for pulling the sender image (comma-separated or a JSON list).
    sender_image_pull_secrets: Annotated[list[str], NoDecode] = []
    # Secrets whose keys become the pod's environment (envFrom); comma-separated or a JSON list.
    sender_secret_name: Annotated[list[str], NoDecode] = []
    # ConfigMaps likewise (non-secret settings such as EMAILPLAN_PUBLIC_URL).
    sender_config_map_name: Annotated[list[str], NoDecode] = []
    # Extra literal environment for the pods, as JSON (local runs: database URL, moto endpoint).
    sender_env: dict[str, str] = {}
    sender_service_account: str | None = None
    sender_cpu_request: str = "100m"
    sender_memory_request: str = "128Mi"
    sender_cpu_limit: str | None = None
    sender_memory_limit: str | None = "512Mi"
    sender_metrics_port: int = 9102

    # Scaling and safety defaults when the plan does not say.
    default_per_pod_rate: float = Field(DEFAULT_RATE_PER_SECOND, gt=0)
    default_max_replicas: int = Field(4, ge=1, le=100)
    backlog_per_replica: int = Field(BACKLOG_PER_REPLICA, ge=1)
    breaker_min_sample: int = Field(100, ge=1)
    default_max_bounce_rate: float = 0.05  # SES puts accounts under review at 5 % bounces
    default_max_complaint_rate: float = 0.001  # and at 0.1 % complaints

    # Development only (EMAILPLAN_DEV_MODE=1): a file holding seconds added to the real time, read
    # every pass (operator/clock.py), so tests move send windows, holds and A/B waits without sleeping.
    clock_offset_file: str | None = None

    # Process.
    metrics_port: int = 9103
    sentry_dsn: SecretStr | None = Field(
        None, validation_alias=AliasChoices("EMAILPLAN_SENTRY_DSN", "SENTRY_DSN")
    )
    peering: str | None = None  # kopf peering object name; None: kopf's auto-detection
    priority: int | None = None  # kopf peering priority; None: random, so two replicas never tie
    # How long a silent replica still counts as alive: a standby takes over at most this long
    # after the active replica died without saying goodbye (SIGKILL, node loss).
    peering_lifetime_seconds: int = Field(60, ge=5, le=3600)

    @field_validator(
        "sender_secret_name", "sender_config_map_name", "sender_image_pull_secrets", mode="before"
    )
    @classmethod
    def _names(cls, value: Any) -> Any:
        """Accept ``a,b`` as well as ``["a","b"]``: Helm values and shell users write either."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _clock_only_in_dev_mode(self) -> OperatorSettings:
        """A shifted clock in production would open send windows at the wrong time: refuse to start."""
        if self.clock_offset_file and not self.dev_mode:
            raise ValueError("EMAILPLAN_CLOCK_OFFSET_FILE is honoured only with EMAILPLAN_DEV_MODE=1")
        return self

    @model_validator(mode="after")
    def _api_key_given(self) -> OperatorSettings:
        """The operator cannot work without the data plane's key: refuse at start, in one line."""
        if not self.api_key.get_secret_value():
            if not self.dev_mode:
                raise missing_secret("EMAILPLAN_API_KEY")
            self.api_key = SecretStr(DEV_API_KEY)
        return self
