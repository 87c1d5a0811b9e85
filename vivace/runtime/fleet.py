"""Which server of a fleet gets a request: healthy ones only, the prompt prefix's own server first.

Why each part:

- **Health.** A server that refused a connection or answered 5xx is ejected:
  no request goes there (unless every server is out) until a background probe
  of its ``/health`` answers again, after a back-off that doubles per failure
  (1 s up to 30 s). A dead member then costs one failed request, not one per
  request.
- **Prefix affinity.** Calls that share a prompt prefix (SoT siblings, the
  branches of a fan-out, agents with the same instructions and context) go to
  the same server, so its prefix cache serves the shared part. The server is
  chosen by rendezvous hashing of the prefix over the healthy servers, so a
  server going away moves only its own prefixes.
- **Load.** Affinity yields when its server has ``slack`` more requests
  outstanding than the least loaded one; then the least loaded wins (ties
  round-robin).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from typing import Awaitable, Callable

from vivace.runtime.backend import Message

log = logging.getLogger(__name__)

EJECT_S, MAX_EJECT_S, PROBE_EVERY_S = 1.0, 30.0, 0.5


def affinity_key(messages: list[Message], prefill: str | None = None) -> str:
    """The part of a prompt that sibling calls share: all of it but the last quarter (at least 64 characters)."""
    text = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in messages) + (prefill or "")
    keep = max(64, len(text) * 3 // 4)
    return text[:keep]


class Fleet:
    def __init__(self, urls: list[str], probe: Callable[[str], Awaitable[bool]], *, affinity: bool = True,
                 slack: int = 4) -> None:
        self.urls = list(urls)
        self.probe = probe
        self.affinity = affinity
        self.slack = slack
        self.outstanding = {u: 0 for u in urls}
        self.served = {u: 0 for u in urls}  # completed requests per URL
        self.failures = {u: 0 for u in urls}
        self.ejected_until: dict[str, float] = {}  # URL -> when its next probe is due
        self._rr = itertools.count()
        self._prober: asyncio.Task[None] | None = None

    def healthy(self) -> list[str]:
        return [u for u in self.urls if u not in self.ejected_until]

    def pick(self, key: str | None, exclude: set[str]) -> str:
        candidates = [u for u in self.healthy() if u not in exclude] or [u for u in self.urls if u not in exclude] \
            or self.urls
        low = min(self.outstanding[u] for u in candidates)
        if self.affinity and key is not None and len(candidates) > 1:
            own = max(candidates, key=lambda u: hashlib.blake2b(f"{u}\x00{key}".encode(), digest_size=8).digest())
            if self.outstanding[own] <= low + self.slack:
                return own
        tied = [u for u in candidates if self.outstanding[u] == low]
        return tied[next(self._rr) % len(tied)]

    def succeeded(self, url: str) -> None:
        self.served[url] += 1
        self.failures[url] = 0

    def failed(self, url: str) -> None:
        """Eject ``url`` until a probe finds it healthy again (a fleet of one has nowhere else to go)."""
        self.failures[url] += 1
        if len(self.urls) == 1:
            return
        wait = min(MAX_EJECT_S, EJECT_S * 2 ** (self.failures[url] - 1))
        if url not in self.ejected_until:
            log.warning("%s ejected from the fleet; probing its /health (first in %.0f s)", url, wait)
        self.ejected_until[url] = time.monotonic() + wait
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_ejected())

    async def _probe_ejected(self) -> None:
        while self.ejected_until:
            now = time.monotonic()
            for url, due in list(self.ejected_until.items()):
                if due > now:
                    continue
                if await self.probe(url):
                    self.ejected_until.pop(url, None)
                    self.failures[url] = 0
                    log.warning("%s is healthy again: back in the fleet", url)
                else:
                    self.failures[url] += 1
                    self.ejected_until[url] = time.monotonic() + min(MAX_EJECT_S, EJECT_S * 2 ** (self.failures[url] - 1))
            await asyncio.sleep(PROBE_EVERY_S)

    async def aclose(self) -> None:
        if self._prober is not None and not self._prober.done():
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
