"""What a judge's reply may be: schema bounds and ``max_tokens``, for both backends (issue 20).

A small or confused model asked for JSON can loop inside a string or an array until
``max_tokens``; a server that turns the JSON schema into a grammar (llama.cpp, vLLM, Ollama)
ends such a reply at the schema's bounds instead, and ``max_tokens`` sized to what the schema
can hold caps the rest. Hosted strict modes (api.openai.com) reject ``maxLength`` and
``maxItems``, so the bounds are sent only where ``judge.schema_bounds`` says
(:func:`bounds_enforced`).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any
from urllib.parse import urlsplit

# The bounds put on a schema that has none of its own: items of an array, characters of a
# string (a claim, a statement, a reason: sentences, not pages).
MAX_ITEMS = 16
MAX_CHARS = 400
# Tokens of a reply by what its schema can hold: about 3 characters a token for text, a few
# for a key, a number or an enum, and some slack for braces and white space.
CHARS_PER_TOKEN = 3
KEY_TOKENS = 4
SCALAR_TOKENS = 4
SLACK_TOKENS = 32
MIN_REPLY_TOKENS = 64


def bounds_enforced(setting: str, base_url: str) -> bool:
    """``judge.schema_bounds``: "auto" is on for a server on this host or a private network
    (llama.cpp, vLLM, Ollama: their grammars enforce the bounds), off for a public host."""
    if setting != "auto":
        return setting == "on"
    return self_hosted(base_url)


def streamed(setting: str, base_url: str) -> bool:
    """``judge.stream``: "auto" is on for a server on this host or a private network (a model
    served on the team's own hardware, often a CPU: a whole-call timeout would read its
    slowness as an outage), off for a public host (fast, and billed: whole calls)."""
    if setting != "auto":
        return setting == "on"
    return self_hosted(base_url)


def self_hosted(base_url: str) -> bool:
    """Is ``base_url`` on this host or a private network (not a public API)?"""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith((".local", ".internal", ".svc", ".lan")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host  # a bare name: a service on the same network ("llama")
    return address.is_private or address.is_loopback


def bounded(schema: dict[str, Any], max_items: int = MAX_ITEMS,
            max_chars: int = MAX_CHARS) -> dict[str, Any]:
    """A copy of ``schema`` in which every array has ``maxItems`` and every free string
    (no enum, no const) ``maxLength``; bounds the schema already has are kept."""
    out: dict[str, Any] = json.loads(json.dumps(schema))

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            kind = node.get("type")
            kinds = set(kind) if isinstance(kind, list) else {kind}
            if "array" in kinds:
                node.setdefault("maxItems", max_items)
            if "string" in kinds and "enum" not in node and "const" not in node:
                node.setdefault("maxLength", max_chars)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def reply_tokens(schema: dict[str, Any], cap: int) -> int:
    """``max_tokens`` for a reply to ``schema``: what it can hold at its bounds (an unbounded
    array or string counts as :data:`MAX_ITEMS` or :data:`MAX_CHARS`), never above ``cap``."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}

    def size(node: Any, depth: int = 0) -> int:
        if not isinstance(node, dict) or depth > 8:
            return SCALAR_TOKENS
        ref = node.get("$ref")
        if isinstance(ref, str):
            return size(defs.get(re.sub(r"^#/(\$defs|definitions)/", "", ref)), depth + 1)
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list):
                return max((size(n, depth + 1) for n in node[key]), default=SCALAR_TOKENS)
        kind = node.get("type")
        kinds = set(kind) if isinstance(kind, list) else {kind}
        if "object" in kinds or "properties" in node:
            props = node.get("properties") or {}
            return sum(KEY_TOKENS + size(v, depth + 1) for v in props.values())
        if "array" in kinds:
            return int(node.get("maxItems", MAX_ITEMS)) * (size(node.get("items"), depth + 1) + 1)
        if "string" in kinds and "enum" not in node and "const" not in node:
            return int(node.get("maxLength", MAX_CHARS)) // CHARS_PER_TOKEN + 2
        return SCALAR_TOKENS

    return min(cap, max(MIN_REPLY_TOKENS, SLACK_TOKENS + size(schema)))


_LOOP = re.compile(r"(.{3,80}?)\1{3,}\s*$", re.S)


# How much of a reply's end repeats_itself reads.
LOOP_WINDOW_CHARS = 1200


def repeats_itself(text: str) -> bool:
    """Does the reply end in a loop (the same piece four times or more in a row)?"""
    return _LOOP.search(text[-LOOP_WINDOW_CHARS:]) is not None
