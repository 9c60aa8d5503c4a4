"""Settings of the data-plane processes (worker, api, db upgrade), read from the environment.

One typed object per process. Secrets are ``SecretStr`` so they never appear in
a repr, a log line or an error message. The token and API keys have no usable
default: a process that needs one and has none refuses to start
(:meth:`SenderSettings.require_secrets`) unless development mode is asked for
explicitly (``EMAILPLAN_DEV_MODE=1``: the demo and the tests).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from emailplan.contract.account import QUOTA_WINDOW_SECONDS
from emailplan.runtime.startup import missing_secret

DEV_KEYS = {"token_key": "dev-token-key-change-me", "api_key": "dev-api-key-change-me"}
"""Used only with ``dev_mode``; known to everyone, so never in production."""

Secret = Literal["token_key", "api_key"]


class SenderSettings(BaseSettings):
    """Everything the data plane reads from its environment (prefix ``EMAILPLAN_``)."""

    model_config = SettingsConfigDict(env_prefix="EMAILPLAN_", extra="ignore")

    database_url: SecretStr = SecretStr("postgresql+asyncpg://emailplan@127.0.0.1:5432/emailplan")
    db_pool_size: int = 10

    aws_region: str = Field(
        "us-east-1", validation_alias=AliasChoices("EMAILPLAN_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
    )
    aws_endpoint_url: str | None = None
    ses_endpoint_url: str | None = None  # a separate SES endpoint (benchmarks, throttling proxy)
    # The longest one SES request may take. Generous on purpose: a request given up is retried,
    # and SES may have taken the first one (an email sent twice); while SES is slow the
    # heartbeat keeps the message's lease, so waiting costs nothing but a send slot.
    ses_timeout_seconds: float = 30.0
    ses_account_endpoint_url: str | None = None  # where GetAccount is read (tests: the local stub)
    account_poll_seconds: float = 30.0  # how often the account's quota and standing are read
    quota_window_seconds: int = QUOTA_WINDOW_SECONDS  # SES's 24 h; shorter only in dev_mode (tests)

    token_key: SecretStr = SecretStr("")  # signs tracking links (worker and api)
    api_key: SecretStr = SecretStr("")  # the administration endpoints' x-api-key (api)
    dev_mode: bool = False  # local runs only: the built-in DEV_KEYS stand in for missing keys
    public_url: str = "http://127.0.0.1:8080"

    sentry_dsn: SecretStr | None = Field(
        None, validation_alias=AliasChoices("EMAILPLAN_SENTRY_DSN", "SENTRY_DSN")
    )
    metrics_port: int = 9102

    # worker
    plan_id: str | None = None
    # The Pod's name (the operator sets it from the downward API): unique among live pods, and
    # kept when Kubernetes restarts the pod's container. With the slot below it names a worker
    # slot, so a restarted worker takes back at once what its dead predecessor held.
    pod_name: str | None = None
    pod_child: int = 0  # the worker process slot in its pod (set by the pod supervisor)
    worker_concurrency: int = 32
    flush_rows: int = 1000  # most results per write (a write starts as soon as one is waiting)
    # A dead pod's messages go back to the others after about this long. Long enough that a
    # live pod starved of CPU for seconds (its heartbeat late) keeps its leases: a lease lost
    # while its send is in flight is an email sent twice.
    lease_seconds: int = 30
    sweep_seconds: float = 2.0  # period of the orphan sweep (expired leases, lost queue work)
    max_attempts: int = 5
    ses_paused_backoff_seconds: float = 300.0  # SES account paused/suspended: wait this long, then try again
    max_send_rate: float | None = None  # account cap; read from SES GetSendQuota when unset
    poll_wait_seconds: int = 20  # SQS long poll
    shutdown_grace_seconds: float = 20.0  # SIGTERM: time to finish sends in flight and flush
    exit_when_idle: bool = False  # tests/benchmarks: exit once the plan has nothing left to send

    # api
    host: str = "0.0.0.0"  # noqa: S104 - pods listen on all interfaces
    port: int = 8080
    sns_topic_arns: list[str] = []
    sns_cert_host_pattern: str = r"^sns\.[a-zA-Z0-9\-]{3,}\.amazonaws\.com(\.cn)?$"
    sns_extra_trusted_cert_prefixes: list[str] = []  # tests only: e.g. https://127.0.0.1:PORT/
    sns_ca_file: str | None = None  # tests only: CA bundle for the local certificate server
    max_upload_bytes: int = 1024 * 1024 * 1024
    open_flush_rows: int = 1000  # pixel hits written per statement
    open_flush_seconds: float = 2.0  # longest a pixel hit waits in memory
    open_machine_window_seconds: float = 3.0  # an open this soon after sending is a machine's
    sns_write_concurrency: int = 1  # SES event batches written at once (1 = biggest batches, best here)

    @model_validator(mode="after")
    def _dev_keys(self) -> Self:
        """In development mode only, fill missing keys with the well-known development values."""
        if self.quota_window_seconds != QUOTA_WINDOW_SECONDS and not self.dev_mode:
            raise ValueError(
                f"quota_window_seconds: SES counts {QUOTA_WINDOW_SECONDS}s; another window only with dev_mode"
            )
        if self.dev_mode:
            for name, value in DEV_KEYS.items():
                if not getattr(self, name).get_secret_value():
                    setattr(self, name, SecretStr(value))
        return self

    def require_secrets(self, *names: Secret) -> None:
        """Raise :class:`StartupError` naming the first of ``names`` that has no value."""
        for name in names:
            if not getattr(self, name).get_secret_value():
                raise missing_secret(f"EMAILPLAN_{name.upper()}")

    def database_target(self) -> str:
        """``host:port/database`` of the database URL, never its password (for log lines and errors)."""
        try:
            parsed = make_url(self.database_url.get_secret_value())
        except ArgumentError:
            return "an unparsable EMAILPLAN_DATABASE_URL"
        return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
