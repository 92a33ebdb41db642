"""Per-caller rate limiting: a token bucket per API key (or client address).

A bucket refills continuously at ``per_minute / 60`` tokens a second up to ``burst``; a request
takes one token or is refused with the seconds until one is available (sent as Retry-After).
Buckets of idle callers are dropped once full again, so memory stays bounded by active callers.

Which bucket a request draws from (:func:`rate_limit_bucket`): with API keys on, its key's, from
whatever address it comes; without keys (the server is then bound to loopback), its client
address's, except that loopback clients are not limited at all unless the settings ask for it.
Every local client has the same address (127.0.0.1), so one per-address bucket would make all
local programs share one budget (16 local clients got 4,871 × 429 and 129 × 200 in 30 s), and
there is no trustworthy way to tell them apart without keys. A local reverse proxy that sends
``X-Forwarded-For`` (which uvicorn trusts from 127.0.0.1) makes each remote client its own
bucket again.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from ragkit.server.auth import caller_id
from ragkit.server.settings import is_loopback


class RateLimiter:
    def __init__(
        self,
        per_minute: int,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else per_minute)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> float:
        """Take one token for ``caller``; return 0 on success, else seconds to wait."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[caller] = (tokens - 1.0, now)
                self._prune(now)
                return 0.0
            self._buckets[caller] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        if len(self._buckets) < 1024:
            return
        full_after = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}


def rate_limit_bucket(token: str | None, client: str | None, limit_loopback: bool) -> str | None:
    """The bucket of a request, or None when it is not rate-limited.

    ``token`` is the request's accepted API key (None when keys are off), ``client`` its
    address. Keyed requests share their key's bucket; without a key, a loopback client is
    exempt unless ``limit_loopback`` (then all loopback clients share one bucket), and any other
    address (a proxied client, an unknown one) has its own.
    """
    if token is None and not limit_loopback and client is not None and is_loopback(client):
        return None
    return caller_id(token, client)


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds; round up so a client that obeys it succeeds."""
    return str(max(1, math.ceil(seconds)))
