"""Which pixel fetches count as machine opens (pure)."""

from __future__ import annotations

import pytest

from emailplan.sender.api.agents import is_machine_agent


@pytest.mark.parametrize(
    ("ua", "machine"),
    [
        (None, True),
        ("", True),
        ("Mozilla/5.0", True),  # Apple Mail Privacy Protection
        ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", True),
        ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", True),
        ("curl/8.5.0", True),
        ("Barracuda Sentinel (EE)", True),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", True),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)", False),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36", False),
        ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17126; Pro)", False),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", False),
    ],
)
def test_machine_agents(ua: str | None, machine: bool) -> None:
    assert is_machine_agent(ua) is machine
    assert is_machine_agent(ua) is machine  # cached answer is the same
