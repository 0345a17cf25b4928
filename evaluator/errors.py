"""The error hierarchy.

Errors carry fields, not just strings, so that the code which counts or stores them can use
the fields (a metric label, a database column) without parsing messages.
"""

from __future__ import annotations

from collections.abc import Mapping


class GroundwatchError(Exception):
    """Base class of every error groundwatch raises on purpose."""


class ConfigError(GroundwatchError):
    """A setting is missing, unknown or invalid.

    ``str(err)`` is one line naming where the bad setting came from (the file, or ``env``: the
    ``GROUNDWATCH__…`` environment variable that set it), the key and the problem, suitable for
    a CLI that exits with code 2.
    """

    #: The first words of the line (a subclass says what kind of problem it is).
    label = "config error"

    def __init__(self, problem: str, *, path: str | None = None, key: str | None = None,
                 env: str | None = None) -> None:
        self.problem = problem
        self.path = path
        self.key = key
        self.env = env
        if env:
            where = f"environment variable {env}" + (f" (key '{key}')" if key else "")
        else:
            where = ", ".join(p for p in (path and f"file {path}", key and f"key '{key}'") if p)
        super().__init__(f"{self.label}: {where}: {problem}" if where
                         else f"{self.label}: {problem}")

    def __str__(self) -> str:
        # Keys, values and file names come from the user: a newline in one, or a huge one,
        # must not turn the CLI's one line into several.
        return _one_line(super().__str__(), 1000)


class UnreachableError(ConfigError):
    """The store or the broker a setting names does not answer (a database that does not
    exist, a closed port, a refused password) when a process starts: one line naming the key
    and where it was set, like any :class:`ConfigError`, and the same exit status (2), since
    the fix is either that setting or the service it names."""

    label = "cannot start"


def _one_line(text: str, limit: int) -> str:
    """``text`` with every character that could break a line escaped, cut to ``limit``."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


class InvalidRecordError(GroundwatchError):
    """A log row could not be mapped onto a :class:`~evaluator.records.LogRecord`.

    ``reason`` is a short, bounded vocabulary word used as a metric label
    (``missing_field``, ``empty_field``, ``wrong_type``, ``bad_contexts``, ``oversized``,
    ``bad_timestamp``, ``bad_json``; ``duplicate_id`` for a second row with a request id already
    read; ``no_position`` for a row a source cannot place in its order; ``incomplete`` for a row
    still missing a field its app writes later, once ``complete_within`` has passed;
    ``future_timestamp`` for a row dated beyond ``max_future``); ``field`` names the
    record field and ``row_ref`` the row (its request id when it has one, otherwise its
    position in the source).
    """

    REASONS = frozenset(
        {"missing_field", "empty_field", "wrong_type", "bad_contexts", "oversized", "bad_timestamp",
         "bad_json", "duplicate_id", "no_position", "incomplete", "future_timestamp"}
    )

    def __init__(self, reason: str, *, field: str, row_ref: str, detail: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.reason = reason
        self.field = field
        self.row_ref = row_ref
        self.detail = detail
        super().__init__(f"row {row_ref}: field '{field}': {reason}: {detail}")


class TransientError(GroundwatchError):
    """A failure worth retrying: a dependency was briefly unavailable or slow."""

    def __init__(self, kind: str, detail: str, *, retry_after_s: float | None = None) -> None:
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s
        super().__init__(f"{kind}: {detail}")


class Stopping(GroundwatchError):
    """The worker is stopping and a batch's work was still running when its grace
    (``worker.stop_grace_s``) ran out: it was cancelled, nothing of the batch was stored, and
    the task hands the batch back to the queue. ``done`` and ``total`` count the items of the
    step that was cut (the judge's), ``waited_s`` how long it waited after the stop."""

    def __init__(self, what: str, *, done: int, total: int, waited_s: float) -> None:
        self.what = what
        self.done = done
        self.total = total
        self.waited_s = waited_s
        super().__init__(f"{what}: {done} of {total} items finished, {total - done} "
                         f"still running {waited_s:.1f}s after the stop was asked for")


class ScorerError(GroundwatchError):
    """A scorer could not produce a result for an item; ``kind`` is a bounded vocabulary word
    (timeout, rate_limited, unparseable, unavailable, internal)."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


class LockHeldError(GroundwatchError):
    """Another sampler replica holds the cursor lock of this source."""

    def __init__(self, source: str, owner: str) -> None:
        self.source = source
        self.owner = owner
        super().__init__(f"source {source!r} is locked by {owner}")


class GoldenRunError(GroundwatchError):
    """A golden-set run got not one ``ok`` score back: ``errors`` counts the metric results
    by error kind (empty when every metric was ``not_applicable``)."""

    def __init__(self, judge_version: str, n_items: int, errors: Mapping[str, int]) -> None:
        self.judge_version = judge_version
        self.n_items = n_items
        self.errors = dict(errors)
        kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(self.errors.items()))
        super().__init__(f"no metric of the {n_items} golden items was scored by "
                         f"{judge_version}: " + (f"errors {kinds}" if kinds else
                                                 "every metric was not applicable"))


def describe_error(exc: BaseException) -> str:
    """A failure as one line for a person: our own errors as they say themselves, a driver's
    error (which SQLAlchemy wraps) by its own type and message."""
    if isinstance(exc, TransientError):
        return exc.detail
    if isinstance(exc, GroundwatchError):
        return str(exc)
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    if orig is not None:
        return f"{type(orig).__name__}: {orig}"
    return f"{type(exc).__name__}: {exc}"
