"""The Celery app: built from config, never at import time.

Reliability settings and why:
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is acknowledged only after its
  batch is stored, so a worker killed mid-batch has the batch re-delivered; the store's
  idempotent upserts make the redo count once.
- ``worker_prefetch_multiplier = 1``: with acks_late, prefetched batches wait behind a slow one.
- results are ignored: scores go to the store, not to a result backend.
- ``broker_transport``: for Redis, kombu's transport with the fix in :mod:`workers.broker`
  (a worker whose ack failed during an outage would otherwise stop consuming for good).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from evaluator.config import Config
from workers.broker import transport_for
from workers.tasks import TASK_NAME


def broker_options(config: Config) -> dict[str, Any]:
    """Transport options for the configured broker URL."""
    url = config.broker.url.get_secret_value()
    visibility = config.broker.visibility_timeout_s
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
        folder = url.removeprefix("filesystem://") or ".groundwatch/broker"
        options = {"data_folder_in": folder, "data_folder_out": folder, "polling_interval": 0.05,
                   "store_processed": False, "control_folder": f"{folder}/control"}
    return options


def make_celery(config: Config) -> Celery:
    """A Celery app for ``config`` with the scoring task registered."""
    url = config.broker.url.get_secret_value()
    if url.startswith("filesystem://"):
        url = "filesystem://"
    app = Celery("groundwatch", broker=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        worker_prefetch_multiplier=config.worker.prefetch_multiplier,
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
    app.groundwatch_config = config
    from workers import tasks

    tasks.register(app)  # the task and the per-process signals, on this app only
    return app
