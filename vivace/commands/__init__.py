"""Command implementations behind ``vivace.cli``; imported lazily, one module per command group."""

from __future__ import annotations

import asyncio
import signal
from typing import Any, Awaitable, TypeVar

T = TypeVar("T")


async def interruptible(work: Awaitable[T], backend: Any) -> T:
    """Run ``work`` so that Ctrl-C or SIGTERM stops it now.

    The signal cancels the run and aborts the backend's requests at the engine
    (a cancellation alone can leave a generation running to its natural end),
    then surfaces as KeyboardInterrupt, which the CLI reports as exit 130.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    interrupted = False

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()
        abort = getattr(backend, "abort_all", None)
        if abort is not None:
            loop.create_task(abort())

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        result = await task
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    if interrupted:
        raise KeyboardInterrupt
    return result
