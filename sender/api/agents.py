"""Which pixel fetches are machines, not people.

Apple Mail Privacy Protection prefetches every image through a proxy that
sends a bare ``Mozilla/5.0``; Gmail, Yahoo and others fetch through image
proxies; security gateways and link scanners fetch everything. Counting those
as opens inflates open rates, so they go to ``openedMachine`` instead.
"""

from __future__ import annotations

_MACHINE_WORDS = (
    "googleimageproxy",
    "ggpht.com",
    "yahoomailproxy",
    "yahoo! slurp",
    "bingpreview",
    "barracuda",
    "mimecast",
    "proofpoint",
    "symantec",
    "messagelabs",
    "trendmicro",
    "forcepoint",
    "sophos",
    "fortinet",
    "ironport",
    "zscaler",
    "safelinks",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "okhttp",
    "java/",
    "libwww",
    "httpclient",
    "headless",
    "phantomjs",
    "bot/",
    "bot;",
    "bot)",
    "crawler",
    "spider",
    "scanner",
    "preview",
    "facebookexternalhit",
    "slackbot",
)
_APPLE_PROXY = frozenset({"Mozilla/5.0", "Mozilla/5.0 (compatible)"})
_CACHE: dict[str, bool] = {}
_CACHE_MAX = 4096


def is_machine_agent(user_agent: str | None) -> bool:
    """True for known proxies, scanners and empty or generic user agents.

    On the pixel's hot path: answers are cached per user agent (mail clients
    send a handful of distinct ones), so a hit costs one dict look-up.
    """
    if not user_agent:
        return True
    cached = _CACHE.get(user_agent)
    if cached is not None:
        return cached
    ua = user_agent.strip()
    lowered = ua.lower()
    machine = ua in _APPLE_PROXY or any(word in lowered for word in _MACHINE_WORDS)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[user_agent] = machine
    return machine
