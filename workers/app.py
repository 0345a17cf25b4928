"""The Celery app: built from config, never at import time.

Reliability settings and why:
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged only after its
  batch is stored, so a worker killed mid-batch has the batch re-delivered; the store's
  idempotent upserts make the redo count once.
- ``worker_prefetch_multiplier = 1``: with acks_late, prefetched batches wait behind a slow one.
- ``visibility_timeout`` (:func:`visibility_timeout`): derived from the scorer and batch size
  unless set; it bounds both a batch's run time (past it a second worker gets the batch too)
  and the wait for a killed worker's batch (docs/architecture.md).
- ``worker_proc_alive_timeout``: a prefork child warms its scorer before it is up.
- results are ignored: scores go to the store, not to a result backend.
- ``broker_transport``: for Redis, kombu's transport with the fix in :mod:`workers.broker`
  (a worker whose ack failed during an outage would otherwise stop consuming for good).
"""

from __future__ import annotations

import math
from typing import Any

from evaluator.config import Config
from evaluator.scorers import JUDGES, item_seconds_estimate
from workers.broker import transport_for
from workers.health import filesystem_broker_folder
from workers.tasks import TASK_NAME, WARM_UP_TIMEOUT_S, GroundwatchCelery, register

# The derived visibility timeout: a batch's pessimistic time (per-item estimate x batch_size)
# times a safety factor, never under the floor. The factor absorbs what the per-item estimate
# does not: a slow host, a store that stalls, a batch of unusually long items. The floor keeps
# fast scorers from a timeout so short that a GC pause or a store hiccup re-delivers a batch;
# the price of a long timeout is only the wait for a dead worker's batch (docs/architecture.md).
VISIBILITY_SAFETY_FACTOR = 4
VISIBILITY_FLOOR_S = 300


def visibility_timeout(config: Config) -> int:
    """``broker.visibility_timeout_s`` if set, else derived from the scorer and batch size:
    ``max(VISIBILITY_FLOOR_S, item estimate x batch_size x VISIBILITY_SAFETY_FACTOR)``
    (embedded at batch 100: 400 s; lexical: 300 s; an unknown scorer: 4000 s). A judge
    counts its item estimate divided by ``judge.max_concurrency``: embedded with a ragas
    cascade at batch 100 and 8 calls in flight: 1900 s."""
    if config.broker.visibility_timeout_s is not None:
        return config.broker.visibility_timeout_s
    batch = config.broker.batch_size
    scorer = config.scoring.scorer
    # A judge scores max_concurrency items at once (one event loop per process); in a
    # cascade it may be given every item of a batch (all low or uncertain).
    parallel = config.judge.max_concurrency
    batch_s = item_seconds_estimate(scorer) * batch / (parallel if scorer in JUDGES else 1)
    if scorer not in JUDGES and config.scoring.judge and config.judge.configured:
        batch_s += item_seconds_estimate(config.scoring.judge) * batch / parallel
    return max(VISIBILITY_FLOOR_S, math.ceil(batch_s * VISIBILITY_SAFETY_FACTOR))


def broker_options(config: Config) -> dict[str, Any]:
    """Transport options for the configured broker URL."""
    url = config.broker.url.get_secret_value()
    visibility = visibility_timeout(config)
    options: dict[str, Any] = {
        "visibility_timeout": visibility,
        # kombu's Redis transport sweeps for unacknowledged messages of dead workers only every
        # interval x throttle seconds (10 x 10 by default), on top of the visibility timeout.
        # Sweep about ten times per visibility window, so a killed worker's batch comes back
        # within ~1.1 x visibility_timeout; one sweep is a ZRANGE on a small index.
        "unacked_restore_interval": max(1, min(60, visibility // 10)),
        "unacked_restore_throttle": 1,
    }
    if url.startswith("filesystem://"):
        # The embedded broker of the demo: a folder of message files beside the store.
        folder = filesystem_broker_folder(url)
        options = {"data_folder_in": folder, "data_folder_out": folder, "polling_interval": 0.05,
                   "store_processed": False, "control_folder": f"{folder}/control"}
    return options


def make_celery(config: Config) -> GroundwatchCelery:
    """A Celery app for ``config`` with the scoring task registered."""
    url = config.broker.url.get_secret_value()
    if url.startswith("filesystem://"):
        url = "filesystem://"
    app = GroundwatchCelery("groundwatch", broker=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        worker_prefetch_multiplier=config.worker.prefetch_multiplier,
        # A prefork child loads its scorer in worker_process_init; Celery kills a child that
        # is not up within this (4 s by default, less than a model load).
        worker_proc_alive_timeout=WARM_UP_TIMEOUT_S,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=config.broker.queue,
        task_routes={TASK_NAME: {"queue": config.broker.queue}},
        broker_transport=transport_for(url),
        broker_transport_options=broker_options(config),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
        # Keep Celery from looking for a result backend or a beat schedule.
        result_backend=None,
    )
    # The task and the per-process signals, on this app only.
    app.runtime = register(app, config, visibility_timeout(config))
    return app
