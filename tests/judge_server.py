"""A scripted OpenAI-protocol server for tests and benchmarks of the LLM judge.

``JudgeServer`` answers ``POST /v1/chat/completions`` and ``POST /v1/embeddings`` on a free
loopback port, records every request, and replies as scripted: a correct structured verdict by
default, or one of the failures a real endpoint shows (non-JSON content, output cut at
``max_tokens``, JSON of the wrong shape, a slow reply, an HTTP error with ``Retry-After``, a
dropped connection). The "valid" replies come from a deterministic toy judge that understands
the prompts of ragas 0.4.3's collections metrics, so ragas's real code path (instructor in
``Mode.JSON`` over the ``openai`` client) runs against it unchanged.

Standard library only, so benchmarks can use it without the test dependencies. It binds
127.0.0.1 and nothing else, every wait in a handler is bounded, and :meth:`JudgeServer.stop`
interrupts slow replies, drops idle keep-alive connections and joins the serving thread::

    with JudgeServer() as server:
        server.script(Reply.status(429, retry_after=1), "valid")
        client = AsyncOpenAI(base_url=server.url, api_key="test-key", max_retries=0)
        ...
        assert server.count(CHAT_PATH) == 2
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import http.server
import itertools
import json
import math
import re
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"
PROPS_PATH = "/props"  # llama.cpp's server: its settings, total_slots among them
# A slow reply never holds a handler longer than this, whatever a test asks for.
MAX_SLEEP = 30.0
EMBEDDING_DIM = 64

Tokenizer = Callable[[str], int]
Policy = Callable[[dict[str, Any], list[dict[str, Any]]], Any]

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """The default tokenizer: words and punctuation marks, a rough stand-in for BPE pieces."""
    return len(_TOKEN_RE.findall(text))


def free_port() -> int:
    """A loopback port that nothing listened on a moment ago: point a client here for
    "connection refused". (tests/prom_helpers.py has one too; this module stays stdlib-only.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# -- replies ------------------------------------------------------------------------------

_KINDS = ("valid", "malformed", "truncated", "wrong_schema", "slow", "status", "close", "content",
          "steady")
# The kinds that need no parameters, which script() and default also accept by name.
_NAMED_KINDS = ("valid", "malformed", "truncated", "wrong_schema", "close")

MALFORMED_TEXT = "Sure! Here is my verdict: supported"
WRONG_SCHEMA = {"answer": 42}


@dataclass(frozen=True)
class Reply:
    """One scripted reply; build it with the classmethods (``Reply.status(429, retry_after=2)``).

    On the embeddings path the same kinds apply to the whole response body: ``malformed`` is a
    body that is not JSON, ``truncated`` a JSON body cut short, ``wrong_schema`` ``{"answer": 42}``.
    """

    kind: str
    seconds: float = 0.0
    code: int = 200
    retry_after: str | None = None
    body: Any = None
    text: str = ""
    finish_reason: str = "stop"
    # A streamed reply ("stream": true) is sent in pieces, pace_s apart: `pieces` of them for
    # "steady", 16 characters each for "content".
    pace_s: float = 0.0
    pieces: int = 1
    first_s: float = 0.0  # a streamed reply's wait before its headers and first piece

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown reply kind {self.kind!r}; valid kinds: {', '.join(_KINDS)}")

    @classmethod
    def valid(cls) -> Reply:
        """200 with the toy judge's correct structured answer."""
        return cls("valid")

    @classmethod
    def malformed(cls) -> Reply:
        """200 whose content is prose, not JSON (no braces, so no JSON can be dug out of it)."""
        return cls("malformed")

    @classmethod
    def truncated(cls) -> Reply:
        """200 with the valid JSON cut in the middle and ``finish_reason: "length"``."""
        return cls("truncated", finish_reason="length")

    @classmethod
    def wrong_schema(cls) -> Reply:
        """200 with valid JSON of the wrong shape: ``{"answer": 42}``."""
        return cls("wrong_schema")

    @classmethod
    def slow(cls, seconds: float) -> Reply:
        """The valid answer after ``seconds`` (capped at MAX_SLEEP; stop() cuts it short)."""
        if not seconds >= 0:
            raise ValueError(f"slow reply needs seconds >= 0, got {seconds!r}")
        return cls("slow", seconds=min(float(seconds), MAX_SLEEP))

    @classmethod
    def status(cls, code: int, retry_after: float | str | None = None, body: Any = None) -> Reply:
        """An HTTP error: ``body`` (a dict sent as JSON, or raw text) defaults to an OpenAI-style
        ``{"error": {...}}``; ``retry_after`` becomes the ``Retry-After`` header as given."""
        if not 100 <= code <= 599:
            raise ValueError(f"HTTP status must be 100..599, got {code!r}")
        return cls("status", code=code, body=body,
                   retry_after=None if retry_after is None else str(retry_after))

    @classmethod
    def close(cls) -> Reply:
        """Read the request, then reset the connection without a reply."""
        return cls("close")

    @classmethod
    def content(cls, text: str, finish_reason: str = "stop", pace_s: float = 0.0) -> Reply:
        """200 with exactly this message content (for parser tests of one's own); streamed
        in 16-character pieces ``pace_s`` apart when the request asks for a stream."""
        return cls("content", text=text, finish_reason=finish_reason, pace_s=pace_s)

    @classmethod
    def steady(cls, pace_s: float, pieces: int = 10, first_s: float = 0.0) -> Reply:
        """A slow but steady judge: the valid answer in ``pieces`` pieces ``pace_s`` apart
        when streamed, the first after ``first_s`` more (the prompt's processing);
        unstreamed, the whole answer after ``first_s`` + ``pieces`` x ``pace_s``."""
        if not pace_s >= 0 or pieces < 1 or not first_s >= 0:
            raise ValueError(f"steady needs pace_s >= 0, pieces >= 1 and first_s >= 0, got "
                             f"{pace_s}, {pieces}, {first_s}")
        return cls("steady", pace_s=min(float(pace_s), MAX_SLEEP), pieces=pieces,
                   first_s=min(float(first_s), MAX_SLEEP))


def as_reply(reply: Reply | str) -> Reply:
    """A Reply, or the name of a kind without parameters ("valid", "malformed", ...)."""
    if isinstance(reply, Reply):
        return reply
    if reply in _NAMED_KINDS:
        return Reply(reply, finish_reason="length" if reply == "truncated" else "stop")
    raise ValueError(f"unknown reply {reply!r}; use a Reply or one of: {', '.join(_NAMED_KINDS)}")


# -- recording ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it. ``headers`` keys are lower-case."""

    method: str
    path: str
    raw: bytes
    body: Any
    headers: dict[str, str]
    time: float
    reply: Reply | None
    schema_title: str | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        body = self.body if isinstance(self.body, dict) else {}
        messages = body.get("messages")
        return messages if isinstance(messages, list) else []


# -- the toy judge ------------------------------------------------------------------------

_STOP_WORDS = frozenset({
    "what", "when", "where", "which", "whom", "whose", "does", "that", "this", "with", "from",
    "have", "there", "their", "about", "into", "were", "been", "they", "them", "than", "then",
    "your", "also", "will", "would", "could", "should", "these", "those",
})
_NONCOMMITTAL = ("i don't know", "i do not know", "i dont know", "cannot", "can't", "not sure",
                 "unsure", "it depends", "no information", "unable to")
_AUXILIARIES = ("is", "are", "was", "were", "has", "have", "can", "will")
_INPUT_RE = re.compile(r"^input:[ \t]*(?=\{)", re.MULTILINE)


def message_text(messages: list[dict[str, Any]]) -> str:
    """The text of every message, as the prompt-token count sees it."""
    parts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content
                         if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "\n".join(parts)


def _first_json_object(text: str, start: int) -> Any:
    brace = text.find("{", start)
    if brace < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, brace)
    except json.JSONDecodeError:
        return None
    return obj


def response_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the client wants back: from ``response_format`` when it carries one
    (``json_schema``), else from the system message instructor writes in Mode.JSON (the schema
    follows the word "json_schema")."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        inner = fmt.get("json_schema")
        if isinstance(inner, dict) and isinstance(inner.get("schema"), dict):
            return inner["schema"]
        if isinstance(fmt.get("schema"), dict):  # instructor's Mode.JSON_SCHEMA
            return fmt["schema"]
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str) and "json_schema" in content:
            schema = _first_json_object(content, content.index("json_schema"))
            if isinstance(schema, dict):
                return schema
    return None


def ragas_input(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``input: {...}`` block of a ragas prompt: the last one of the latest user message
    that has one. Only a line that starts with ``input:`` counts; inside the JSON a newline is
    escaped, so the data cannot fake one."""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        text = message_text([message])
        matches = list(_INPUT_RE.finditer(text))
        if matches:
            obj = _first_json_object(text, matches[-1].end())
            if isinstance(obj, dict):
                return obj
    return {}


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def content_words(text: str) -> list[str]:
    """Lower-case words longer than three letters, question words and the like left out."""
    return [w for w in re.findall(r"\w+", text.lower()) if len(w) > 3 and w not in _STOP_WORDS]


def overlap(text: str, context: str) -> float:
    """The share of ``text``'s content words that occur in ``context`` (0 when it has none)."""
    words = content_words(text)
    if not words:
        return 0.0
    known = set(content_words(context))
    return sum(w in known for w in words) / len(words)


def _rating(share: float) -> int:
    return 2 if share >= 2 / 3 else 1 if share >= 1 / 3 else 0


def as_question(sentence: str) -> str:
    """A statement turned into a question: "Paris is the capital." -> "Is Paris the capital?"."""
    words = sentence.strip().rstrip(".!?").split()
    if not words:
        return ""
    for i, word in enumerate(words[1:], start=1):
        if word.lower() in _AUXILIARIES:
            return " ".join([word.capitalize(), *words[:i], *words[i + 1:]]) + "?"
    return "Is it true that " + " ".join(words) + "?"


def _statements(schema: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"statements": sentences(str(ragas_input(messages).get("answer", "")))}


def _nli(schema: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    data = ragas_input(messages)
    context = str(data.get("context", ""))
    known = set(content_words(context))
    verdicts = []
    for statement in data.get("statements") or []:
        words = content_words(str(statement))
        found = sum(w in known for w in words)
        verdicts.append({
            "statement": str(statement),
            "reason": f"{found} of {len(words)} content words occur in the context",
            "verdict": int(bool(words) and found / len(words) > 0.5),
        })
    return {"statements": verdicts}


def _answer_relevance(schema: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    response = str(ragas_input(messages).get("response", ""))
    first = next(iter(sentences(response)), "")
    evasive = any(p in response.lower().replace("\u2019", "'") for p in _NONCOMMITTAL)
    return {"question": as_question(first), "noncommittal": int(evasive)}


def _groundedness(schema: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    data = ragas_input(messages)
    return {"rating": _rating(overlap(str(data.get("response", "")), str(data.get("context", ""))))}


def _context_relevance(schema: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    data = ragas_input(messages)
    share = overlap(str(data.get("user_input", "")), str(data.get("context", "")))
    return {"rating": _rating(share)}


def minimal_instance(schema: dict[str, Any], root: dict[str, Any] | None = None,
                     depth: int = 0) -> Any:
    """The smallest instance that validates against ``schema`` as pydantic writes schemas:
    required properties only, strings "x", integers 1, numbers 1.0, booleans true, one item
    per array, the first enum value, ``$ref`` into ``$defs`` resolved."""
    root = schema if root is None else root
    if depth > 32:
        raise ValueError("schema nests deeper than 32 levels (a recursive $ref?)")
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return minimal_instance(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return minimal_instance(options[0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = minimal_instance(part, root, depth + 1)
            if not isinstance(value, dict):
                return value
            merged.update(value)
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties", {})
        return {name: minimal_instance(props.get(name, {}), root, depth + 1)
                for name in schema.get("required", [])}
    if kind == "array":
        prefix = [minimal_instance(s, root, depth + 1) for s in schema.get("prefixItems", [])]
        items = schema.get("items")
        count = max(1, int(schema.get("minItems", 1))) - len(prefix)
        extra = [minimal_instance(items, root, depth + 1)] * count if isinstance(items, dict) else []
        return prefix + extra
    if kind in ("integer", "number"):
        value: float = 1
        if "minimum" in schema:
            value = max(value, schema["minimum"])
        if "exclusiveMinimum" in schema:
            value = max(value, math.floor(schema["exclusiveMinimum"]) + 1)
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        if "exclusiveMaximum" in schema:
            value = min(value, math.ceil(schema["exclusiveMaximum"]) - 1)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    formats = {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01", "time": "00:00:00",
               "uuid": "00000000-0000-0000-0000-000000000000", "uri": "http://x",
               "email": "x@example.com"}
    text = formats.get(schema.get("format", ""), "x")
    return text.ljust(int(schema.get("minLength", 0)), "x")


def compact_input(messages: list[dict[str, Any]]) -> tuple[list[str], str, str]:
    """(passages, question, answer) of groundwatch's compact prompt (evaluator.judge.compact)."""
    text = message_text([m for m in messages if m.get("role") == "user"][:1])
    passages_part = text.split("PASSAGES:\n", 1)[-1].split("\n\nQUESTION: ", 1)[0]
    passages = [re.sub(r"^\[\d+\] ", "", line) for line in passages_part.splitlines()
                if line.startswith("[")]
    question = text.split("QUESTION: ", 1)[-1].split("\n\nANSWER: ", 1)[0]
    answer = text.split("ANSWER: ", 1)[-1]
    return passages, question, answer


def _compact(schema: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """groundwatch's one-call judgement: a claim per sentence of the answer, supported when
    most of its content words are in one passage, with that passage's best sentence as the
    quote; ratings by word overlap."""
    passages, question, answer = compact_input(messages)
    claims = []
    for sentence in sentences(answer):
        best, best_share, quote = None, 0.0, ""
        for i, passage in enumerate(passages, 1):
            for candidate in sentences(passage) or [passage]:
                share = overlap(sentence, candidate)
                if share > best_share:
                    best, best_share, quote = i, share, candidate
        claims.append({"claim": sentence,
                       "verdict": "supported" if best_share > 0.5 else "unsupported",
                       "passage": best, "quote": quote if best_share > 0.5 else ""})
    evasive = any(p in answer.lower().replace("\u2019", "'") for p in _NONCOMMITTAL)
    return {"claims": claims, "answer_rating": _rating(overlap(question, answer)),
            "noncommittal": evasive,
            "context_rating": _rating(overlap(question, " ".join(passages)))}


def generic_policy(schema: dict[str, Any], messages: list[dict[str, Any]]) -> Any:
    return minimal_instance(schema)


# Response models of ragas 0.4.3's collections metrics, by their schema title.
RAGAS_POLICIES: dict[str, Policy] = {
    "StatementGeneratorOutput": _statements,
    "NLIStatementOutput": _nli,
    "AnswerRelevanceOutput": _answer_relevance,
    "ResponseGroundednessOutput": _groundedness,
    "ContextRelevanceOutput": _context_relevance,
    # groundwatch's own compact judge (evaluator/judge/compact.py).
    "GroundwatchJudgement": _compact,
}


def embed(text: str) -> list[float]:
    """A 64-dimensional hashed bag of words, L2-normalised: equal texts get equal vectors and
    texts sharing words point the same way. A text without words gets a fixed unit vector
    (a zero vector would turn a cosine similarity into NaN)."""
    vector = [0.0] * EMBEDDING_DIM
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[digest[0] % EMBEDDING_DIM] += 1.0 if digest[1] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        return [1.0] + [0.0] * (EMBEDDING_DIM - 1)
    return [v / norm for v in vector]


# -- HTTP ---------------------------------------------------------------------------------

def _error_body(code: int, message: str) -> dict[str, Any]:
    kinds = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
             403: ("permission_error", None), 404: ("invalid_request_error", "not_found"),
             429: ("requests", "rate_limit_exceeded")}
    kind, error_code = kinds.get(code, ("server_error" if code >= 500 else "invalid_request_error",
                                        None))
    return {"error": {"message": message, "type": kind, "param": None, "code": error_code}}


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when a benchmark opens dozens
    # at once.
    request_queue_size = 256
    judge: JudgeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a timeout test, a stopped benchmark) is routine, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks getfqdn(), a DNS lookup that can stall; we know the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, self.server_address[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints and the openai client do
    server: _HTTPServer
    # Bounds every read: a client that stalls mid-request cannot hold a thread past this.
    timeout = 10.0

    def setup(self) -> None:
        super().setup()
        self.server.judge._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.judge._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read server.requests, not stderr

    def do_POST(self) -> None:
        self.server.judge._handle(self)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST

    def send_json(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_raw(code, json.dumps(payload).encode(), headers)

    def send_raw(self, code: int, data: bytes, headers: dict[str, str] | None = None,
                 content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def reset(self) -> None:
        """Drop the connection with a TCP reset instead of a reply."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class JudgeServer:
    """A scripted OpenAI-compatible endpoint on ``127.0.0.1:<free port>``; see the module doc.

    ``tokenizer`` counts the tokens reported in ``usage`` (prompt tokens: the text of all
    messages; completion tokens: the reply's content). ``default`` answers chat requests once
    the script is used up. The server starts in the constructor; ``stop()`` (or leaving the
    ``with`` block) shuts it down.
    """

    def __init__(self, *, tokenizer: Tokenizer = count_tokens,
                 default: Reply | str = "valid", stop_timeout: float = 5.0) -> None:
        self.tokenizer = tokenizer
        self._default = as_reply(default)
        self._stop_timeout = stop_timeout
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._queues: dict[str, collections.deque[Reply]] = {
            CHAT_PATH: collections.deque(), EMBEDDINGS_PATH: collections.deque()}
        self._policies: dict[str, Policy] = dict(RAGAS_POLICIES)
        # GET /v1/models lists these; with require_key set it answers 401 to any other key.
        self.models: list[str] = ["stub", "stub-judge"]
        # GET /props says this many slots, as llama.cpp's server does; None: no such route.
        self.slots: int | None = None
        self.require_key: str | None = None
        # The usage of every reply sent (what a client that reads usage must add up to).
        self.usage_served = {"prompt_tokens": 0, "completion_tokens": 0}
        self._connections: set[socket.socket] = set()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd = _HTTPServer((HOST, 0), _Handler)
        self._httpd.judge = self
        host, self.port = self._httpd.socket.getsockname()[:2]
        if host != HOST:  # the whole point: nothing beyond loopback can reach a test judge
            self._httpd.server_close()
            raise RuntimeError(f"judge server bound {host}, not {HOST}")
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"judge-server-{self.port}", daemon=True)
        self._thread.start()

    # -- life cycle

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        """The ``base_url`` for OpenAI clients."""
        return f"http://{HOST}:{self.port}/v1"

    def stop(self) -> None:
        """Stop serving: interrupt slow replies, drop open connections, join the thread."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            for conn in self._connections:  # wakes handlers waiting on idle keep-alive reads
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._idle.wait_for(lambda: not self._connections, timeout=self._stop_timeout)
        self._httpd.server_close()
        self._thread.join(timeout=self._stop_timeout)

    def __enter__(self) -> JudgeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting

    def script(self, *replies: Reply | str, path: str = CHAT_PATH) -> None:
        """Queue replies for the next requests to ``path`` (chat by default), used in order."""
        queue = self._queue(path)
        items = [as_reply(r) for r in replies]
        with self._lock:
            queue.extend(items)

    @property
    def default(self) -> Reply:
        """The chat reply once the script is used up (``"valid"`` unless set)."""
        return self._default

    @default.setter
    def default(self, reply: Reply | str) -> None:
        self._default = as_reply(reply)

    def policy(self, title: str, fn: Policy) -> None:
        """Answer valid requests whose response schema has this ``title`` with
        ``fn(schema, messages)`` (its result is sent as JSON content)."""
        with self._lock:
            self._policies[title] = fn

    # -- recording

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, path: str | None = None, *, title: str | None = None) -> int:
        """Requests so far, to ``path`` and/or for the response schema ``title`` if given."""
        return sum(1 for r in self.requests
                   if (path is None or r.path == path) and (title is None or r.schema_title == title))

    def bodies_text(self) -> str:
        """Every request body received, decoded and concatenated (for "X never reached the
        judge" assertions; an API key travels in a header, see :meth:`wire_text`)."""
        return "\n".join(r.raw.decode("utf-8", "replace") for r in self.requests)

    def wire_text(self) -> str:
        """Everything received: request lines, headers and bodies."""
        return "\n".join(
            f"{r.method} {r.path}\n"
            + "".join(f"{k}: {v}\n" for k, v in r.headers.items())
            + r.raw.decode("utf-8", "replace")
            for r in self.requests)

    def clear(self) -> None:
        """Forget recorded requests and queued replies (the default and policies stay)."""
        with self._lock:
            self._requests.clear()
            for queue in self._queues.values():
                queue.clear()
            self.usage_served = {"prompt_tokens": 0, "completion_tokens": 0}

    # -- internals

    def _queue(self, path: str) -> collections.deque[Reply]:
        try:
            return self._queues[path]
        except KeyError:
            raise ValueError(f"no such endpoint {path!r}; scriptable: {', '.join(self._queues)}")\
                from None

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)
            self._idle.notify_all()

    def _next_reply(self, path: str) -> Reply:
        with self._lock:
            queue = self._queues[path]
            if queue:
                return queue.popleft()
        return self._default if path == CHAT_PATH else Reply.valid()

    def _handle(self, h: _Handler) -> None:
        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        raw = h.rfile.read(length) if length > 0 else b""
        path = h.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in h.headers.items()}
        try:
            body: Any = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        reply: Reply
        title: str | None = None
        if h.command == "GET" and path == MODELS_PATH:
            wanted = f"Bearer {self.require_key}" if self.require_key else None
            if wanted is not None and headers.get("authorization") != wanted:
                reply = Reply.status(401, body=_error_body(401, "invalid API key"))
            else:
                reply = Reply.content(json.dumps({"object": "list", "data": [
                    {"id": m, "object": "model"} for m in self.models]}))
        elif h.command == "GET" and path == PROPS_PATH and self.slots is not None:
            reply = Reply.content(json.dumps({"total_slots": self.slots}))
        elif h.command != "POST" or path not in self._queues:
            reply = Reply.status(404, body=_error_body(404, f"no route for {h.command} {path}"))
        elif length < 0:
            reply = Reply.status(400, body=_error_body(400, "bad Content-Length"))
            h.close_connection = True
        elif not isinstance(body, dict):
            reply = Reply.status(400, body=_error_body(400, "request body is not a JSON object"))
        else:
            reply = self._next_reply(path)
            schema = response_schema(body) if path == CHAT_PATH else None
            title = schema.get("title") if schema else None
        with self._lock:
            self._requests.append(RecordedRequest(
                method=h.command, path=path, raw=raw, body=body, headers=headers,
                time=time.time(), reply=reply, schema_title=title))
        self._respond(h, path, body, reply)

    def _respond(self, h: _Handler, path: str, body: Any, reply: Reply) -> None:
        if path in (MODELS_PATH, PROPS_PATH) and reply.kind == "content":
            h.send_raw(200, reply.text.encode())
            return
        if reply.kind == "close":
            h.reset()
            return
        if reply.kind == "status":
            headers = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
            payload = reply.body if reply.body is not None else _error_body(
                reply.code, f"scripted HTTP {reply.code} from the judge server")
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            h.send_raw(reply.code, data, headers)
            return
        if reply.kind == "slow" and self._stopping.wait(reply.seconds):
            h.reset()  # stopping: give up on the reply rather than hold stop() up
            return
        streamed = isinstance(body, dict) and body.get("stream") is True
        if reply.kind == "steady" and not streamed and \
                self._stopping.wait(min(MAX_SLEEP, reply.first_s + reply.pace_s * reply.pieces)):
            h.reset()
            return
        if path == EMBEDDINGS_PATH:
            self._respond_embeddings(h, body, reply)
        else:
            self._respond_chat(h, body, reply)

    def _valid_content(self, body: dict[str, Any]) -> str:
        schema = response_schema(body)
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        if schema is None:
            fmt = body.get("response_format")
            return "{}" if isinstance(fmt, dict) and fmt.get("type") == "json_object" else "OK"
        with self._lock:
            policy = self._policies.get(str(schema.get("title")), generic_policy)
        return json.dumps(policy(schema, messages))

    def _send_policy_error(self, h: _Handler, exc: Exception) -> None:
        # A broken toy judge must fail the test loudly, not look like a dropped connection.
        message = f"judge server policy failed: {type(exc).__name__}: {exc}"
        h.send_json(500, _error_body(500, message))

    def _respond_chat(self, h: _Handler, body: dict[str, Any], reply: Reply) -> None:
        finish_reason = reply.finish_reason
        if reply.kind == "malformed":
            content = MALFORMED_TEXT
        elif reply.kind == "wrong_schema":
            content = json.dumps(WRONG_SCHEMA)
        elif reply.kind == "content":
            content = reply.text
        else:
            try:
                content = self._valid_content(body)
            except Exception as exc:
                self._send_policy_error(h, exc)
                return
            if reply.kind == "truncated":
                content = content[: max(1, len(content) // 2)]
        prompt = self.tokenizer(message_text(body.get("messages") or []))
        if body.get("stream") is True:
            self._stream_chat(h, body, content, finish_reason, reply, prompt)
            return
        completion = self.tokenizer(content)
        self._served(prompt, completion)
        h.send_json(200, {
            "id": f"chatcmpl-stub-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model", "stub-model")),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
                "logprobs": None,
            }],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        })

    def _stream_chat(self, h: _Handler, body: dict[str, Any], content: str, finish_reason: str,
                     reply: Reply, prompt: int) -> None:
        """Server-sent events as OpenAI streams them: a chunk per piece (``pace_s`` apart),
        one with the finish reason, the usage chunk when ``stream_options.include_usage``,
        then ``[DONE]``. A client that hangs up mid-stream ends it; only what was sent is
        counted in ``usage_served``."""
        size = max(1, -(-len(content) // reply.pieces)) if reply.kind == "steady" else 16
        pieces = [content[i:i + size] for i in range(0, len(content), size)] or [""]
        ident = f"chatcmpl-stub-{next(self._ids)}"
        model = str(body.get("model", "stub-model"))

        def event(delta: dict[str, Any], finish: str | None, usage: Any = None) -> bytes:
            chunk: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk",
                                     "created": int(time.time()), "model": model,
                                     "choices": [{"index": 0, "delta": delta,
                                                  "finish_reason": finish}]}
            if usage is not None:
                chunk = {**chunk, "choices": [], "usage": usage}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        if reply.first_s and self._stopping.wait(reply.first_s):
            h.reset()
            return
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        sent = ""
        try:
            for piece in pieces:
                if reply.pace_s and self._stopping.wait(reply.pace_s):
                    return
                h.wfile.write(event({"content": piece}, None))
                h.wfile.flush()
                sent += piece
            h.wfile.write(event({}, finish_reason))
            usage = {"prompt_tokens": prompt, "completion_tokens": self.tokenizer(content),
                     "total_tokens": prompt + self.tokenizer(content)}
            options = body.get("stream_options")
            if isinstance(options, dict) and options.get("include_usage"):
                h.wfile.write(event({}, None, usage))
            h.wfile.write(b"data: [DONE]\n\n")
            h.wfile.flush()
        except OSError:
            pass  # the client hung up (an abandoned reply)
        finally:
            self._served(prompt, self.tokenizer(sent))

    def _respond_embeddings(self, h: _Handler, body: dict[str, Any], reply: Reply) -> None:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs or []]
        tokens = sum(self.tokenizer(t) for t in texts)
        # The openai client asks for base64 unless told otherwise, and decodes it itself.
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = embed(text)
            value: Any = (base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                          if as_base64 else vector)
            data.append({"object": "embedding", "index": i, "embedding": value})
        payload = {"object": "list", "data": data, "model": str(body.get("model", "stub-embed")),
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        if reply.kind == "malformed":
            h.send_raw(200, MALFORMED_TEXT.encode())
        elif reply.kind == "wrong_schema":
            h.send_json(200, WRONG_SCHEMA)
        elif reply.kind == "truncated":
            encoded = json.dumps(payload).encode()
            h.send_raw(200, encoded[: max(1, len(encoded) // 2)])
        elif reply.kind == "content":
            h.send_raw(200, reply.text.encode())
        else:
            self._served(tokens, 0)
            h.send_json(200, payload)

    def _served(self, prompt: int, completion: int) -> None:
        with self._lock:
            self.usage_served["prompt_tokens"] += prompt
            self.usage_served["completion_tokens"] += completion


def serve(**kwargs: Any) -> Iterator[JudgeServer]:
    """For a pytest fixture: ``yield from serve()`` starts a server and stops it afterwards."""
    server = JudgeServer(**kwargs)
    try:
        yield server
    finally:
        server.stop()
