"""Graceful shutdown: what the gateway does the moment SIGTERM (or Ctrl-C) arrives.

uvicorn's own handler stops accepting connections and gives requests in progress
`timeout_graceful_shutdown` to finish, but the app hears of it only afterwards (lifespan shutdown).
This hook runs first, in the event loop, so that readiness turns false, new requests on open
connections get 503 and gRPC stops taking calls at the same moment.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_shutdown_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` in the running loop on SIGTERM or SIGINT, then the handler that was there
    (uvicorn's). Returns a function that takes the hook away. Signals reach only the main thread: in
    any other thread (a test server), this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, object] = {}

    def handle(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        prior = previous[signum]
        if callable(prior):
            prior(signum, frame)
        else:  # SIG_DFL or SIG_IGN: as if this hook had not been there
            signal.signal(signum, prior)  # type: ignore[arg-type]
            signal.raise_signal(signum)

    for signum in SHUTDOWN_SIGNALS:
        previous[signum] = signal.signal(signum, handle)

    def remove() -> None:
        for signum, prior in previous.items():
            if signal.getsignal(signum) is handle:
                signal.signal(signum, prior)  # type: ignore[arg-type]

    return remove
