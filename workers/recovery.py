"""Re-send what a broker lost.

The sampler stores each sampled item as ``queued`` before it enqueues it, and moves its cursor
only after the enqueue; a worker marks the item ``scored`` (or ``failed``). A Redis without
persistence that restarts forgets every message it held, queued or unacknowledged, while the
store still says ``queued``: nothing would ever score those items again.

:class:`BrokerLossGuard` notices the loss with a marker key in the broker, written once
(``SET NX``). A Redis that kept its data still has it; a Redis that lost its data does not, and
the first sampler to find it missing writes it again and re-sends every item the store still
holds as ``queued``. Items whose message did survive are then delivered twice, which the
store's idempotent writes absorb (they are scored, and counted, once). A missing marker on the
very first start re-sends what is queued from an earlier run, which is just as harmless.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError

from evaluator.store import Ledger
from workers.broker import transport_for

log = logging.getLogger("groundwatch.sampler")

Enqueue = Callable[[list[dict[str, Any]]], None]


class BrokerLossGuard:
    """Checks the broker's marker at most every ``every_s`` seconds: one round trip on a
    connection of its own with short timeouts, so a broker that is down never holds up the
    sampler (its own enqueue retries report the outage)."""

    def __init__(self, url: str, queue: str, ledger: Ledger, enqueue: Enqueue, *,
                 batch_size: int, every_s: float = 1.0, timeout_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                           socket_connect_timeout=timeout_s)
        self.key = f"groundwatch:broker-marker:{queue}"
        self.ledger = ledger
        self.enqueue = enqueue
        self.batch_size = batch_size
        self.every_s = every_s
        self._clock = clock
        self._checked_at: float | None = None
        self._failing = False
        self.resent = 0  # items re-sent so far (for logs and tests)

    def check(self) -> int:
        """Re-send the store's queued items if the broker lost its data; return how many."""
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self.every_s:
            return 0
        self._checked_at = now
        try:
            if not self.client.set(self.key, uuid.uuid4().hex, nx=True):
                self._failing = False
                return 0
            try:
                n = self._resend()
            except Exception:
                self.client.delete(self.key)  # try again at the next check
                raise
        except Exception as exc:
            if not self._failing:  # once per outage, not once per second
                log.warning("could not check the broker for lost messages (will retry): "
                            "%s: %s", type(exc).__name__, exc)
            self._failing = True
            return 0
        self._failing = False
        self.resent += n
        if n:
            log.warning("the broker had no marker key (it lost its data, in a restart "
                        "without persistence, or this is its first use): re-sent %d items "
                        "the store still holds as queued", n)
        return n

    def _resend(self) -> int:
        n = 0
        for payloads in self.ledger.queued_payloads(self.batch_size):
            self.enqueue(payloads)
            n += len(payloads)
        return n


def broker_loss_hook(config: Any, ledger: Ledger,
                     enqueue: Enqueue) -> Callable[[Any], None] | None:
    """An ``on_step`` callback for :meth:`Sampler.run` that runs the guard while this sampler
    holds the source's lock (one replica re-sends, not all), or None for brokers other than
    Redis."""
    url = config.broker.url.get_secret_value()
    if transport_for(url) is None:
        return None
    guard = BrokerLossGuard(url, config.broker.queue, ledger, enqueue,
                            batch_size=config.broker.batch_size)
    # Once before the first step, so a fresh broker is marked before anything new is sent
    # (else that step's items would be sent twice).
    guard.check()

    def after_step(result: Any) -> None:
        if result.locked:
            guard.check()

    return after_step


def describe_outage(exc: BaseException, store: object) -> str | None:
    """One line for an error that means the store or the broker cannot be used right now
    (a traceback would only repeat itself at every retry); None for anything else."""
    if isinstance(exc, DBAPIError):
        cause = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        code = getattr(exc.orig, "sqlite_errorname", None)  # SQLITE_FULL, SQLITE_IOERR_WRITE
        if code:
            cause = f"{cause} ({code})"
        return f"the store {store!r} cannot be used: {type(exc.orig).__name__}: {cause}"
    if isinstance(exc, (BrokerError, RedisConnectionError, RedisTimeoutError)):
        return f"the broker cannot be reached: {type(exc).__name__}: {exc}"
    return None
