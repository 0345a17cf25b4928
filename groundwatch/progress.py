"""Progress of a long command (``demo``, ``score``, ``backfill``) on stderr.

On a terminal it is a live tqdm bar, redrawn in place. Anywhere else (a pipe, a log file, CI)
redrawing makes no sense, so it writes a line per step of progress instead: a line only when
the text changed, and then only after a tenth of the total more is done or ``interval_s``
has passed, plus one final line. A log gets a dozen readable lines, never the same one twice.
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm


class StepProgress:
    """``update(done, detail)`` after every step; ``close()`` (or the ``with`` block) at the end.

    ``label`` and ``unit`` make the line ``"{label} {done}/{total} {unit}, {detail}"``
    (``"{label} {done} {unit}, ..."`` while ``total`` is unknown). ``tty`` forces the bar or
    the lines (default: whether ``stream`` is a terminal).
    """

    def __init__(self, label: str, *, total: int | None = None, unit: str = "items",
                 stream: TextIO | None = None, tty: bool | None = None,
                 interval_s: float = 5.0, share: float = 0.1) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self.share = share
        self._done = 0
        self._detail = ""
        self._last_line: str | None = None
        self._last_done = 0
        self._last_at = 0.0
        self._closed = False
        self._bar: Any = None
        if self.stream.isatty() if tty is None else tty:
            # tqdm draws nothing on a terminal that reports no size (a pty nobody sized, as
            # under `script` or some CI runners): give it one.
            columns, lines = _size(self.stream)
            sized = columns > 0 and lines > 0
            self._bar = tqdm(total=total, desc=label, unit=f" {unit}", file=self.stream,
                             dynamic_ncols=sized, ncols=None if sized else (columns or 80),
                             nrows=None if sized else (lines or 24), leave=True,
                             mininterval=0.2)

    @property
    def live(self) -> bool:
        """Whether a bar is drawn (it shows its own rate and elapsed time)."""
        return self._bar is not None

    def line(self) -> str:
        """The current state as one line of text."""
        count = f"{self._done}/{self.total}" if self.total is not None else f"{self._done}"
        return f"{self.label} {count} {self.unit}" + (f", {self._detail}" if self._detail else "")

    def update(self, done: int, detail: str = "", *, total: int | None = None) -> None:
        """Report that ``done`` units are done (a running total, not an increment)."""
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        self._detail = detail
        if self._bar is not None:
            self._bar.set_postfix_str(detail, refresh=False)
            self._bar.update(done - self._done)
            self._done = done
            return
        self._done = done
        now = time.monotonic()
        step = max(1.0, self.share * self.total) if self.total else None
        due = (self._last_line is None or now - self._last_at >= self.interval_s
               or (step is not None and done - self._last_done >= step))
        if due:
            self._write(now)

    def close(self) -> None:
        """Draw the final state: the bar completed, or the last line if it was not written."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        else:
            self._write(time.monotonic())

    def _write(self, now: float) -> None:
        text = self.line()
        if text == self._last_line:
            return
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last_line, self._last_done, self._last_at = text, self._done, now

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _size(stream: TextIO) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 0, 0
    return size.columns, size.lines
