"""Which server of a fleet gets a request: healthy ones only, the prompt prefix's own server first.

Why each part:

- **Health.** A server that refused a connection or answered 5xx is ejected:
  no request goes there (unless every server is out) until a background probe
  of its ``/health`` answers again, after a back-off that doubles per failure
  (1 s up to 30 s). A dead member then costs one failed request, not one per
  request.
- **Prefix affinity.** Calls that share a prompt prefix (SoT siblings, the
  branches of a fan-out, agents with the same instructions and context) go to
  the same server, so its prefix cache serves the shared part. The fleet keeps,
  per server, the chained hashes of the prompt blocks it sent there (an LRU as
  large as a server's cache holds, roughly): a request goes to the server that
  has the longest run of its leading blocks, if that run is at least half the
  prompt. No assumption about where a prompt's shared part ends: a sibling
  matches as far as it really agrees.
  A server that comes back after ejection starts with an empty record.
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
from collections import OrderedDict
from typing import Awaitable, Callable

from vivace.runtime.backend import Message

log = logging.getLogger(__name__)

EJECT_S, MAX_EJECT_S, PROBE_EVERY_S = 1.0, 30.0, 0.5


BLOCK_CHARS = 64  # about 16 tokens: fine enough to follow where siblings diverge
MIN_MATCH = 0.5  # of a prompt's blocks, for affinity to pull it (less: the least loaded server)
REMEMBERED_BLOCKS = 8192  # per server: ~500k characters of prompts, more than a CPU server's KV cache holds


def prefix_blocks(messages: list[Message], prefill: str | None = None) -> list[bytes]:
    """Chained hashes of a prompt's 64-character blocks: equal up to block i exactly when the prompts are."""
    text = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in messages) + "\x1e" + (prefill or "")
    out: list[bytes] = []
    digest = b""
    for i in range(0, len(text) - BLOCK_CHARS + 1, BLOCK_CHARS):  # a partial last block is never shared
        digest = hashlib.blake2b(digest + text[i:i + BLOCK_CHARS].encode(), digest_size=12).digest()
        out.append(digest)
    return out


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
        self._sent: dict[str, OrderedDict[bytes, None]] = {u: OrderedDict() for u in urls}

    def healthy(self) -> list[str]:
        return [u for u in self.urls if u not in self.ejected_until]

    def pick(self, blocks: list[bytes] | None, exclude: set[str]) -> str:
        """The server for a request whose prompt has ``blocks`` (None: no affinity wanted)."""
        candidates = [u for u in self.healthy() if u not in exclude] or [u for u in self.urls if u not in exclude] \
            or self.urls
        low = min(self.outstanding[u] for u in candidates)
        chosen = None
        if self.affinity and blocks:
            matched = {u: self._matched(u, blocks) for u in candidates}
            best = max(matched.values())
            if best >= MIN_MATCH * len(blocks):  # a shared template opening alone is not worth a queue
                near = [u for u in candidates if matched[u] == best and self.outstanding[u] <= low + self.slack]
                chosen = min(near, key=lambda u: self.outstanding[u]) if near else None
        if chosen is None:
            tied = [u for u in candidates if self.outstanding[u] == low]
            chosen = tied[next(self._rr) % len(tied)]
        if self.affinity and blocks:
            self._remember(chosen, blocks)
        return chosen

    def _matched(self, url: str, blocks: list[bytes]) -> int:
        sent = self._sent[url]
        n = 0
        for block in blocks:
            if block not in sent:
                break
            n += 1
        return n

    def _remember(self, url: str, blocks: list[bytes]) -> None:
        sent = self._sent[url]
        for block in blocks:
            sent[block] = None
            sent.move_to_end(block)
        while len(sent) > REMEMBERED_BLOCKS:
            sent.popitem(last=False)

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
                    self._sent[url].clear()  # a server that was away may have restarted with a cold cache
                    log.warning("%s is healthy again: back in the fleet", url)
                else:
                    self.failures[url] += 1
                    self.ejected_until[url] = time.monotonic() + min(MAX_EJECT_S, EJECT_S * 2 ** (self.failures[url] - 1))
            await asyncio.sleep(PROBE_EVERY_S)

    async def aclose(self) -> None:
        if self._prober is not None and not self._prober.done():
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
