"""kombu's Redis transport, with one fix that keeps a worker alive across a Redis outage.

The bug (kombu 5.x, Redis transport): acknowledging a message first removes it from Redis's
``unacked`` index and only then returns the prefetch credit to the channel. When Redis is gone
at that moment, the removal raises, Celery logs "Couldn't ack" and carries on, and the credit
is never returned. With ``worker_prefetch_multiplier = 1`` and late acks that was the only
credit: the channel believes a message is still outstanding, never sends BRPOP again, never
notices that the connection is lost, and the worker stays up doing nothing, for good, even
after Redis is back (tests/test_faults.py reproduces it with every pool).

The fix returns the credit whatever Redis says. The message itself is unaffected: if Redis kept
it (persistence), it is still in the ``unacked`` index and comes back after the visibility
timeout; the store's idempotent writes make the redo count once. If Redis lost it, the batch
was already scored and stored.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual


class QoS(kombu_redis.QoS):
    """Releases the prefetch credit of a message even when Redis cannot be told."""

    def ack(self, delivery_tag: Any) -> None:
        try:
            self._remove_from_indices(delivery_tag).execute()
        finally:
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            if requeue:
                self.restore_by_tag(delivery_tag, leftmost=True)
            else:
                self._remove_from_indices(delivery_tag).execute()
        finally:
            virtual.QoS.ack(self, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    """``redis://`` and ``rediss://`` URLs, with :class:`QoS` above."""

    Channel = Channel


#: The ``broker_transport`` setting that selects :class:`Transport`.
TRANSPORT = f"{__name__}:Transport"


def transport_for(url: str) -> str | None:
    """The transport class for a broker URL, or None to let kombu pick by scheme."""
    scheme = url.partition("://")[0]
    return TRANSPORT if scheme in ("redis", "rediss") else None
