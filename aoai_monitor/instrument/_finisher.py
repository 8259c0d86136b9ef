"""Ended calls become span attributes, span ends and metric points on one background thread.

Why: the OpenTelemetry SDK's attribute cleaning, span end and three histogram records cost 70–100 µs a
call here, more than the whole overhead budget (bench/bench_instrument.py). The caller's thread only
notes what it saw and appends the call to a deque; this thread does the rest, with the call's own end
time — the same move BatchSpanProcessor makes for export. Calls are finished in batches every INTERVAL
(a busy app's request threads then meet this thread rarely, each time for at most the interpreter's
switch interval).

Nothing is lost: flush() finishes every queued call on the calling thread, and it runs before the
tracer and meter providers given to instrument() force_flush or shut down, at interpreter exit (before
those providers' own exit shutdown), and in uninstrument(). A periodic metric reader sees a call's points at its first collection after the call
was finished (≤ INTERVAL later).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque

log = logging.getLogger(__name__)
INTERVAL = 0.05  # seconds an ended call may wait for its span to end
_FLUSHES_FIRST = "_aoai_monitor_flushes_first"

_pending: deque = deque()  # ended calls (deque append and popleft are thread-safe and never block)
_lock = threading.Lock()  # held while finishing: flush() waits for a batch the thread has begun
_wake = threading.Event()
_thread: threading.Thread | None = None


def submit(call) -> None:
    """Queue an ended call; wakes the thread when the queue was empty (a busy queue is already awaited)."""
    _pending.append(call)
    if len(_pending) == 1:
        if _thread is None:
            _start()
        _wake.set()


def flush() -> None:
    """Finish every queued call now, on this thread."""
    with _lock:
        while True:
            try:
                call = _pending.popleft()
            except IndexError:
                return
            try:
                call.finish()
            except Exception:  # noqa: BLE001 - one call's telemetry must never stop the others'
                log.warning("aoai_monitor.instrument: could not finish the span of one call", exc_info=True)


def flush_first(provider) -> None:
    """Make provider.force_flush() and provider.shutdown() finish the queued calls first.

    Set on the instance (the class and other providers are untouched); calling it again changes nothing.
    """
    for name in ("force_flush", "shutdown"):
        method = getattr(provider, name, None)
        if method is None or getattr(method, _FLUSHES_FIRST, False):
            continue

        def flushing_first(*args, _method=method, **kwargs):
            flush()
            return _method(*args, **kwargs)

        setattr(flushing_first, _FLUSHES_FIRST, True)
        try:
            setattr(provider, name, flushing_first)
        except AttributeError:  # a provider with __slots__: interpreter exit and uninstrument() still flush
            pass


def flush_at_exit() -> None:
    """Finish the queued calls at interpreter exit before the providers shut down.

    A TracerProvider registers its exit shutdown when it is made, and exit handlers run last-registered
    first: registering again here (instrument() calls this, after its providers exist) runs ours first.
    """
    atexit.unregister(flush)
    atexit.register(flush)


def _start() -> None:
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="aoai-monitor-instrument", daemon=True)
            _thread.start()


def _run() -> None:
    while True:
        _wake.wait()
        time.sleep(INTERVAL)
        _wake.clear()  # before draining: a call queued from here on sets it again
        flush()


def _after_fork_in_child() -> None:
    """The parent's thread does not exist here, and its queued calls are the parent's to finish."""
    global _thread, _lock, _wake
    _pending.clear()
    _thread, _lock, _wake = None, threading.Lock(), threading.Event()


os.register_at_fork(after_in_child=_after_fork_in_child)
