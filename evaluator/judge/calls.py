"""Every HTTP call to the judge goes through :class:`JudgeTransport`, under one policy.

ragas and the OpenAI client make the calls; this transport, below them, is where groundwatch
decides what a call may cost and what a failure means, whatever the library above does with
it (ragas's ResponseGroundedness, for one, swallows exceptions and asks again up to five
times; the OpenAI client retries twice on its own unless told not to):

- before a call: the circuit breaker, the shared budgets, and the item's own earlier failure
  (an item whose judge was unreachable is not called again for its other prompts) may refuse
  it, without any network traffic;
- a 429 is waited out (``Retry-After``, else a jittered backoff) up to
  ``judge.rate_limit_max_wait_s`` per call; 5xx replies, timeouts and refused connections are
  retried ``judge.max_retries`` times with a jittered backoff, then fail;
- every reply's ``usage`` is read and priced, and the whole story of the item's calls is kept
  in its :class:`CallLog` (a context variable: the asyncio task of one item sees its own);
- a reply cut at ``max_tokens`` or ending in a loop is a dead end: the same request again
  (ragas's own loops ask again as they were), or a re-ask that hands that reply back for
  repair (instructor's), would end the same way at the same cost, so it is refused
  (``reply_cut``) without a call; the metric ends ``unparseable``.

With ``judge.stream = "on"`` a chat call is sent streamed (``stream: true``, usage asked for
in the last chunk) and read here piece by piece, then handed to the client above as the plain
completion it asked for. The time limit is then a **progress deadline**: ``judge.timeout_s``
for each piece; the first piece (the prompt's processing) within 3x the time the judge took
per prompt token on its recent calls (:class:`PrefillPace`: 5x ``timeout_s`` before any
measurement), so a slow but steady judge (a local model on CPU) is never timed out however
long its whole reply takes, up to ``judge.max_call_s``; and a reply
that starts to loop is **abandoned** as soon as it does (``CallLog.abandoned``), not paid for
to ``max_tokens``; it counts as cut (``finish_reason`` ``length``), so it is not asked again.

The OpenAI client above is built with ``max_retries=0``, so these are the only retries.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import hashlib
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from evaluator.judge.bounds import LOOP_WINDOW_CHARS, repeats_itself

log = logging.getLogger("groundwatch.judge")

# Statuses of one HTTP call (the label of groundwatch_judge_requests_total).
CALL_STATUSES = ("ok", "unparseable", "rate_limited", "unavailable", "timeout")
# Why a call was not made at all.
REFUSALS = ("budget", "circuit_open", "item_failed", "reply_cut")
EXCERPT_CHARS = 300
_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 8.0


@dataclass
class CallLog:
    """The calls made for one item (all its metrics): what they cost and how they ended.

    ``failure`` is the kind of the first failure that ended a call for good (rate_limited,
    unavailable, timeout) or of a refusal (budget, circuit_open); once set, later calls for
    the item are refused. ``replies`` holds an excerpt of each reply's text and
    ``finish_reasons`` how each ended ("stop", "length", ...), for an ``unparseable`` outcome
    to show what the judge said and why it stopped."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    failure: str | None = None
    retry_after_s: float | None = None
    refused: Counter[str] = field(default_factory=Counter)
    replies: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    unparseable: int = 0
    unpriced: bool = False
    truncations: int = 0
    # Fingerprints of the requests whose reply was cut or looped, and those replies' texts.
    dead_ends: set[str] = field(default_factory=set)
    dead_replies: set[str] = field(default_factory=set)
    # Streamed replies given up as soon as they looped; and replies whose usage the server
    # did not send (an abandoned stream): their tokens are estimated from their characters.
    abandoned: int = 0
    estimated_usage: int = 0


CURRENT: contextvars.ContextVar[CallLog | None] = contextvars.ContextVar(
    "groundwatch_judge_call_log", default=None)


class JudgeRefused(httpx.TransportError):
    """A call the transport did not make (budget spent, circuit open, item already failed).
    A :class:`httpx.TransportError`, so the OpenAI client reports it as a connection error;
    the item's :class:`CallLog` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"judge call not made: {reason}")


@dataclass(frozen=True, slots=True)
class Permit:
    """A call the circuit let through: how many times it had opened by then (``epoch``), and
    whether the call is the half-open state's one trial."""

    epoch: int
    trial: bool = False


class CircuitBreaker:
    """Consecutive failed calls open the circuit for ``cooldown_s``; then one trial call is let
    through (half-open): its success closes it, its failure opens it again. Only the trial
    decides: a reply to a call sent before the circuit opened neither closes nor reopens it
    (each call carries the :class:`Permit` it was let through with). Shared by every thread
    and the event loop of one process."""

    def __init__(self, failures: int, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._epoch = 0
        self._trial = False
        self.last_ok: bool | None = None  # None until the first call of this process
        self.opened_total = 0

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> Permit | None:
        """May a call be made now? In half-open state only one trial at a time."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return Permit(self._epoch)
            if state == "half_open" and not self._trial:
                self._trial = True
                return Permit(self._epoch, trial=True)
            return None

    def _is_trial(self, permit: Permit) -> bool:
        return permit.trial and permit.epoch == self._epoch

    def success(self, permit: Permit) -> None:
        with self._lock:
            self.last_ok = True
            if self._opened_at is not None and not self._is_trial(permit):
                return  # a reply to a call sent before it opened: the trial decides
            if self._opened_at is not None:
                log.warning("judge circuit closed: the judge answers again")
            self._consecutive = 0
            self._opened_at = None
            self._trial = False

    def failure(self, permit: Permit) -> None:
        with self._lock:
            self.last_ok = False
            if self._opened_at is not None:
                if self._is_trial(permit):  # the trial failed: a full cool-down again
                    self._trial = False
                    self._opened_at = self._clock()
                return  # an older call's failure: open already
            self._consecutive += 1
            if self._consecutive >= self.threshold:
                self.opened_total += 1
                self._epoch += 1
                log.error("judge circuit open after %d consecutive failed calls: no calls "
                          "for %.0fs; items keep their cheap scores and are marked not "
                          "judged", self._consecutive, self.cooldown_s)
                self._opened_at = self._clock()


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1000 tokens; ``known`` is False for a model without a configured price."""

    prompt: float = 0.0
    completion: float = 0.0
    known: bool = False

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1000.0


def retry_after_seconds(headers: httpx.Headers, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _jittered(attempt: int) -> float:
    return random.uniform(0.0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * (2 ** attempt)))


def reply_text(body: Any) -> str | None:
    """The text of a chat completion's first choice (None for embeddings)."""
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None
    content = message.get("content") if isinstance(message, dict) else None
    if content is None and isinstance(message, dict) and message.get("tool_calls"):
        try:
            return str(message["tool_calls"][0]["function"]["arguments"])
        except (KeyError, IndexError, TypeError):
            return None
    return content if isinstance(content, str) else None


def finish_reason(body: Any) -> str | None:
    """How a chat reply ended ("stop", "length", ...), if it says."""
    try:
        finish = body["choices"][0].get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return finish if isinstance(finish, str) else None


def looks_unparseable(body: Any) -> bool:
    """A 200 whose text is not a JSON object, or was cut off (finish_reason "length")."""
    text = reply_text(body)
    if text is None:
        return False
    if finish_reason(body) == "length":
        return True
    stripped = text.strip()
    if stripped.startswith("```"):  # a fenced block: instructor's JSON modes accept these
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        return not isinstance(json.loads(stripped), dict)
    except ValueError:
        return True


class JudgeTransport(httpx.AsyncBaseTransport):
    """An httpx transport that applies the judge's call policy (see the module docstring).

    ``guard()`` is called before every call and returns the refusal reason or None (the shared
    budget check); ``on_reply(prompt_tokens, completion_tokens, usd)`` after every reply with a
    usage (the shared budget's accounting)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, circuit: CircuitBreaker,
                 price: Price, max_retries: int, rate_limit_max_wait_s: float,
                 guard: Callable[[], str | None] = lambda: None,
                 on_reply: Callable[[int, int, float], None] = lambda p, c, u: None,
                 sleep: Callable[[float], Any] = asyncio.sleep, stream: bool = False,
                 max_call_s: float = 900.0) -> None:
        self.inner = inner
        self.stream = stream
        self.max_call_s = max_call_s
        self.prefill = PrefillPace(cap_s=max_call_s)
        self.circuit = circuit
        self.price = price
        self.max_retries = max_retries
        self.rate_limit_max_wait_s = rate_limit_max_wait_s
        self.guard = guard
        self.on_reply = on_reply
        self._sleep = sleep

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _refusal(self, item: CallLog) -> str | None:
        if item.failure is not None:
            return "item_failed" if item.failure not in ("budget", "circuit_open") \
                else item.failure
        return self.guard()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        item = CURRENT.get()
        if item is None:  # a call outside an item (a probe): account it nowhere
            item = CallLog()
        if _dead_end(item, request):
            item.refused["reply_cut"] += 1
            raise JudgeRefused("reply_cut")
        reason = self._refusal(item)
        permit = self.circuit.allow() if reason is None else None
        if permit is None:
            reason = reason or "circuit_open"
            item.refused[reason] += 1
            if item.failure is None:
                item.failure = reason
            raise JudgeRefused(reason)
        waited = 0.0
        failures = 0
        while True:
            item.calls += 1
            try:
                response = await self._send(item, request)
            except httpx.TimeoutException:
                status, response = "timeout", None
            except httpx.TransportError:
                status, response = "unavailable", None
            else:
                assert response is not None
                if response.status_code == 429:
                    status = "rate_limited"
                elif response.status_code >= 500:
                    status = "unavailable"
                elif response.status_code >= 400:  # 401, 404, 400: asking again will not help
                    return await self._rejected(item, response, permit)
                else:
                    return await self._reply(item, response, permit, request)
            item.statuses[status] += 1
            if status == "rate_limited":
                assert response is not None
                after = retry_after_seconds(response.headers)
                delay = after if after is not None else _jittered(failures)
                if waited + delay <= self.rate_limit_max_wait_s:
                    await response.aclose()
                    waited += delay
                    await self._sleep(delay)
                    continue
                item.failure = "rate_limited"
                item.retry_after_s = delay
                return response  # the OpenAI client raises RateLimitError
            self.circuit.failure(permit)
            failures += 1
            retry = self.circuit.allow() if failures <= self.max_retries else None
            if retry is not None:
                permit = retry
                if response is not None:
                    await response.aclose()
                await self._sleep(_jittered(failures - 1))
                continue
            item.failure = status
            if response is not None:
                return response  # the OpenAI client raises InternalServerError & co.
            raise httpx.ConnectError(f"judge {status} after {failures} attempt(s)",
                                     request=request)

    async def _send(self, item: CallLog, request: httpx.Request) -> httpx.Response:
        """One call: streamed and read here (see the module's text) when streaming is on and
        it is a chat completion that did not ask for a stream itself; else as it is."""
        body = _chat_body(request) if self.stream else None
        if body is None:
            return await self.inner.handle_async_request(request)
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        content = json.dumps(body).encode()
        headers = [(k, v) for k, v in request.headers.multi_items()
                   if k.lower() != "content-length"] + [("content-length", str(len(content)))]
        # The pieces' deadlines are kept here (_read_stream); the socket's own read timeout
        # only has to outlast the longest of them.
        timeouts = dict(request.extensions.get("timeout") or {})
        progress_s = float(timeouts.get("read") or 60.0)
        timeouts["read"] = self.max_call_s
        streamed = httpx.Request(request.method, request.url, headers=headers, content=content,
                                 extensions={**request.extensions, "timeout": timeouts})
        prompt_estimate = len(content) // CHARS_PER_TOKEN
        first_s = self.prefill.deadline(prompt_estimate, progress_s)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.max_call_s):
                try:  # a server may send its headers only with the first piece
                    async with asyncio.timeout(first_s):
                        response = await self.inner.handle_async_request(streamed)
                except TimeoutError:
                    raise httpx.ReadTimeout(f"no reply within {first_s:.1f} s for the first "
                                            "piece of a streamed reply",
                                            request=request) from None
                if response.status_code != 200 or not response.headers.get(
                        "content-type", "").startswith("text/event-stream"):
                    return response  # an error (or a server that answered whole): as before
                reply = await _read_stream(response, item, started + first_s, progress_s,
                                           request, budget_chars=_budget_chars(body))
        except TimeoutError:
            raise httpx.ReadTimeout(f"the streamed reply took longer than judge.max_call_s "
                                    f"({self.max_call_s:g} s)", request=request) from None
        first_piece_at = reply.pop("_first_piece_at", None)
        usage = reply.get("usage") or {}
        if first_piece_at is not None:
            self.prefill.observe(first_piece_at - started,
                                 _tokens(usage.get("prompt_tokens")) or prompt_estimate)
        if reply.get("usage") is None:
            item.estimated_usage += 1
            text = reply["choices"][0]["message"]["content"]
            reply["usage"] = {"prompt_tokens": len(request.content) // CHARS_PER_TOKEN,
                              "completion_tokens": len(text) // CHARS_PER_TOKEN}
        return httpx.Response(200, headers={"content-type": "application/json"},
                              content=json.dumps(reply).encode(), request=request)

    async def _rejected(self, item: CallLog, response: httpx.Response,
                        permit: Permit) -> httpx.Response:
        body = (await response.aread())[:EXCERPT_CHARS].decode("utf-8", "replace")
        item.statuses["unavailable"] += 1
        item.failure = "unavailable"
        self.circuit.failure(permit)
        log.error("the judge refused a call with HTTP %d (check judge.base_url, judge.model "
                  "and the key's variable judge.api_key_env): %s", response.status_code,
                  " ".join(body.split()))
        return response

    async def _reply(self, item: CallLog, response: httpx.Response, permit: Permit,
                     request: httpx.Request) -> httpx.Response:
        body_bytes = await response.aread()
        try:
            body = json.loads(body_bytes)
        except ValueError:
            body = None
        usage = body.get("usage") if isinstance(body, dict) else None
        prompt = completion = 0
        if isinstance(usage, dict):
            prompt = _tokens(usage.get("prompt_tokens"))
            completion = _tokens(usage.get("completion_tokens"))
        usd = self.price.cost(prompt, completion)
        item.prompt_tokens += prompt
        item.completion_tokens += completion
        item.cost_usd += usd
        if not self.price.known and (prompt or completion):
            item.unpriced = True
        text = reply_text(body)
        if text is not None:
            finish = finish_reason(body)
            item.replies.append(text[:EXCERPT_CHARS])
            item.finish_reasons.append(finish or "unknown")
            messages = _messages(request) if finish == "length" or repeats_itself(text) \
                else None
            if messages is not None:
                item.dead_ends.add(_fingerprint(messages))
                item.dead_replies.add(text.strip())
        status = "ok"
        if body is None or looks_unparseable(body):
            status = "unparseable"
            item.unparseable += 1
        item.statuses[status] += 1
        self.circuit.success(permit)
        try:
            self.on_reply(prompt, completion, usd)
        except Exception:  # the budget's store is down: the call is made, log and go on
            log.warning("could not account a judge reply against the budget", exc_info=True)
        return response


# An abandoned stream's usage is estimated at this many characters per token (OpenAI's rule
# of thumb for English); said in the item's usage as estimated.
CHARS_PER_TOKEN = 4
# A streamed reply is checked for a loop once it holds this many characters.
MIN_LOOP_CHECK_CHARS = 200
# A streamed reply longer than its max_tokens x this many characters has outgrown its budget
# (a server that does not honour max_tokens): abandoned there. Generous: a token of English or
# JSON is 3-4 characters, rarely more than 8.
MAX_CHARS_PER_TOKEN = 8
# The first piece of a streamed reply may take this many times the measured time to it
# (per prompt token, the slowest of the last PACE_WINDOW calls).
PACE_FACTOR = 3.0
PACE_WINDOW = 20
# Before any measurement, the first piece may take this many times the progress deadline
# (a long prompt on a CPU server; a call that never starts is still caught, later).
UNMEASURED_FACTOR = 5.0


def _chat_body(request: httpx.Request) -> dict[str, Any] | None:
    """The JSON body of a chat completion request that is not streamed already, else None."""
    if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
        return None
    try:
        body = json.loads(request.content)
    except ValueError:
        return None
    return body if isinstance(body, dict) and not body.get("stream") else None


def _budget_chars(body: dict[str, Any]) -> int | None:
    """The most characters a reply to ``body`` may run to (its max_tokens), or None."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return limit * MAX_CHARS_PER_TOKEN
    return None


async def _read_stream(response: httpx.Response, item: CallLog, first_by: float,
                       progress_s: float, request: httpx.Request,
                       budget_chars: int | None = None) -> dict[str, Any]:
    """The server-sent events of a streamed chat completion, read piece by piece, as one
    plain completion: the first piece by the monotonic time ``first_by`` (the prompt's
    processing), each next one within ``progress_s`` (the progress deadline), else
    :class:`httpx.ReadTimeout`. A reply that starts to loop, or outgrows ``budget_chars``, is
    abandoned there (``finish_reason`` ``length``). When the first piece came is returned
    under ``_first_piece_at`` (for :class:`PrefillPace`)."""
    first_piece_at: float | None = None
    parts: list[str] = []
    size = 0
    tail = ""  # the reply's end, all that repeats_itself reads (not the whole text each time)
    finish: str | None = None
    usage: Any = None
    meta: dict[str, Any] = {}
    buffer = b""
    over = False  # the reply has outgrown budget_chars
    pieces = response.aiter_raw().__aiter__()
    try:
        while True:
            limit = progress_s if first_piece_at is not None else max(
                0.001, first_by - time.monotonic())
            try:
                async with asyncio.timeout(limit):
                    chunk = await pieces.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                which = "the next piece" if first_piece_at is not None else "the first piece"
                raise httpx.ReadTimeout(f"no reply within {limit:.1f} s for {which} of a "
                                        "streamed reply", request=request) from None
            if first_piece_at is None:
                first_piece_at = time.monotonic()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                data = line.strip()
                if not data.startswith(b"data:"):
                    continue
                data = data[5:].strip()
                if data == b"[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                meta.setdefault("id", event.get("id"))
                meta.setdefault("model", event.get("model"))
                meta.setdefault("created", event.get("created"))
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or ():
                    delta = choice.get("delta") or {}
                    piece = delta.get("content")
                    if isinstance(piece, str) and piece:
                        parts.append(piece)
                        size += len(piece)
                        tail = (tail + piece)[-LOOP_WINDOW_CHARS:]
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                # Checked piece by piece: one read may hold many pieces of a fast server.
                over = budget_chars is not None and size > budget_chars
                if over:
                    break
            if finish is None and (over or (
                    size >= MIN_LOOP_CHECK_CHARS and repeats_itself(tail))):
                item.abandoned += 1
                finish = "length"
                break
    finally:
        await response.aclose()
    return {"id": meta.get("id") or "chatcmpl-streamed", "object": "chat.completion",
            "created": meta.get("created") or int(time.time()),
            "model": meta.get("model") or "",
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": "".join(parts)},
                         "finish_reason": finish or "stop", "logprobs": None}],
            "usage": usage, "_first_piece_at": first_piece_at}


class PrefillPace:
    """How long the judge takes to its first piece per prompt token, measured on streamed
    calls (the slowest of the last :data:`PACE_WINDOW`, so a busy moment is remembered), and
    the deadline of the next call's first piece from it: ``PACE_FACTOR`` x the measured
    time for this prompt, never under the progress deadline. Before any measurement,
    ``UNMEASURED_FACTOR`` x the progress deadline. Never over ``cap_s``."""

    def __init__(self, cap_s: float = float("inf")) -> None:
        self.cap_s = cap_s
        self._per_token: collections.deque[float] = collections.deque(maxlen=PACE_WINDOW)

    def observe(self, seconds: float, prompt_tokens: int) -> None:
        if seconds > 0 and prompt_tokens > 0:
            self._per_token.append(seconds / prompt_tokens)

    def deadline(self, prompt_tokens: int, progress_s: float) -> float:
        if not self._per_token:
            return min(self.cap_s, UNMEASURED_FACTOR * progress_s)
        return min(self.cap_s, max(progress_s,
                                   PACE_FACTOR * max(self._per_token) * prompt_tokens))


def _messages(request: httpx.Request) -> list[Any] | None:
    """The chat messages of a request (None for other calls: embeddings, probes)."""
    try:
        body = json.loads(request.content)
    except (ValueError, httpx.RequestNotRead):
        return None
    messages = body.get("messages") if isinstance(body, dict) else None
    return messages if isinstance(messages, list) else None


def _fingerprint(messages: list[Any]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def _dead_end(item: CallLog, request: httpx.Request) -> bool:
    """Would this request end where an earlier one of the item's did: the same request, or a
    re-ask carrying a reply that was cut or looped? (Its body is read only once the item has
    such a reply.)"""
    messages = _messages(request) if item.dead_ends else None
    if messages is None:
        return False
    if _fingerprint(messages) in item.dead_ends:
        return True
    return any(isinstance(m, dict) and m.get("role") == "assistant"
               and isinstance(m.get("content"), str) and m["content"].strip()
               in item.dead_replies for m in messages)


def _tokens(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int) and 0 <= value < 10**9:
        return value
    return 0
