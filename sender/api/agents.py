"""Which pixel fetches are machines, not people.

Apple Mail Privacy Protection prefetches every image through a proxy that
sends a bare ``Mozilla/5.0``; Gmail, Yahoo and others fetch through image
proxies; security gateways and link scanners fetch everything. Counting those
as opens inflates open rates, so they go to ``opened_machine`` instead.
"""

from __future__ import annotations

import re

_MACHINE = re.compile(
    r"googleimageproxy|ggpht\.com|yahoomailproxy|yahoo! slurp|bingpreview|barracuda|mimecast|proofpoint"
    r"|symantec|messagelabs|trendmicro|forcepoint|sophos|fortinet|cisco|ironport|zscaler|safelinks"
    r"|python-requests|python-urllib|aiohttp|curl/|wget/|go-http-client|okhttp|java/|libwww|httpclient"
    r"|headless|phantomjs|bot\b|bot/|crawler|spider|scanner|preview|facebookexternalhit|slackbot",
    re.IGNORECASE,
)


def is_machine_agent(user_agent: str | None) -> bool:
    """True for known proxies, scanners and empty or generic user agents."""
    if not user_agent:
        return True
    ua = user_agent.strip()
    if ua in ("Mozilla/5.0", "Mozilla/5.0 (compatible)"):
        return True  # Apple Mail Privacy Protection's proxy
    return _MACHINE.search(ua) is not None
