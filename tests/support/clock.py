"""A local stack whose operator runs on a test clock the test moves forward (dev mode only),
and the mailbox side of such tests: the mail moto accepted, read and opened as a person would.

``EMAILPLAN_CLOCK_OFFSET_FILE`` holds the seconds the operator adds to real time, so
hours of waiting (an A/B test's decision, a rollout's hold, a window, a follow-up's
``after``) pass without sleeping.
"""

from __future__ import annotations

import email
import email.policy
import re
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from devenv.kube import KubeCluster
from devenv.moto import MotoServer
from devenv.postgres import PostgresServer
from devenv.stack import StackOptions
from emailplan.sender.settings import SenderSettings
from support.e2e import API_KEY, Stack

HUMAN_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Version/17.0 Safari/605.1.15"
# The data plane's default: a pixel hit this soon after the send is a mail proxy's, not a person's.
MACHINE_OPEN_WINDOW = float(SenderSettings.model_fields["open_machine_window_seconds"].default)
PIXEL = re.compile(r'(http[^"\s]+/v1/events/open\?requestId=[^"\s&]+)')


class ClockStack(Stack):
    """The stack with the operator's test clock, moved forward by the tests."""

    clock_file: Path

    def operator_now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._offset())

    def advance(self, seconds: float) -> None:
        self.clock_file.write_text(str(self._offset() + seconds))

    def advance_to(self, instant: datetime) -> None:
        self.advance((instant - self.operator_now()).total_seconds())

    def _offset(self) -> float:
        return float(self.clock_file.read_text() or 0) if self.clock_file.exists() else 0.0


@contextmanager
def clock_stack(
    kube: KubeCluster,
    postgres: PostgresServer,
    moto: MotoServer,
    prefix: str,
    data_env: dict[str, str] | None = None,
) -> Iterator[ClockStack]:
    """The stack on a test clock, started for the block and stopped after it (logs kept)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    clock_file = base / "clock-offset"
    clock_file.write_text("0")
    options = StackOptions(
        api_key=API_KEY,
        data_env=data_env or {},
        operator_env={"EMAILPLAN_CLOCK_OFFSET_FILE": str(clock_file), "EMAILPLAN_DEV_MODE": "1"},
    )
    st = ClockStack(base, options, postgres=postgres, moto=moto, kube=kube)
    st.clock_file = clock_file
    st.start()
    try:
        yield st
    finally:
        st.stop()
        print(f"e2e logs kept in {base}")


def mails(st: Stack, marker: str, subject: str = "") -> list[EmailMessage]:
    """Every email moto accepted for an address containing ``marker`` (whose subject starts with
    ``subject``), parsed."""
    out = []
    for item in st.moto.sent_emails():
        raw = item.get("raw_data")
        if raw and marker in raw:
            msg = email.message_from_string(raw, policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            if str(msg["Subject"]).startswith(subject):
                out.append(msg)
    return out


def addressee(msg: EmailMessage) -> str:
    return str(msg["To"].addresses[0].addr_spec).lower()


def open_pixel(msg: EmailMessage) -> None:
    """Fetch the email's open pixel as a person's mail client does."""
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    url = PIXEL.search(html)
    assert url is not None, "the email has no open pixel"
    req = urllib.request.Request(url.group(1).replace("&amp;", "&"), headers={"User-Agent": HUMAN_UA})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
