"""The task's retry backoff (unit tests; the retries themselves are in test_faults.py)."""

from __future__ import annotations

from workers.tasks import backoff_delay


def test_backoff_stays_capped_after_thousands_of_retries() -> None:
    # A store outage retries a batch without a limit: a day of retries must not overflow.
    for retries in (0, 10, 1100, 10_000):
        assert 0.0 <= backoff_delay(retries, 2.0, 300.0) <= 300.0


def test_backoff_honours_retry_after() -> None:
    assert backoff_delay(0, 0.01, 0.02, retry_after_s=5.0) == 5.0
