"""The scripted judge server (tests/judge_server.py): every reply kind over real HTTP with the
``openai`` client, and ragas 0.4.3's real code path (llm_factory -> instructor Mode.JSON ->
AsyncOpenAI) scoring against it.

The ragas tests double as a record of what ragas sends and how it treats failures; if an
upgrade changes the request shape or the retry counts, they say so here first.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, Literal

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

from tests.judge_server import (
    CHAT_PATH,
    EMBEDDING_DIM,
    EMBEDDINGS_PATH,
    MALFORMED_TEXT,
    MAX_SLEEP,
    JudgeServer,
    Reply,
    count_tokens,
    free_port,
    message_text,
    minimal_instance,
    ragas_input,
    serve,
)

# ragas reads this at import time; the tests must never phone home.
os.environ["RAGAS_DO_NOT_TRACK"] = "true"

from instructor.exceptions import IncompleteOutputException
from instructor.retry import InstructorRetryException
from ragas.embeddings import OpenAIEmbeddings
from ragas.llms import llm_factory
from ragas.metrics.collections import (
    AnswerRelevancy,
    ContextRelevance,
    Faithfulness,
    ResponseGroundedness,
)

pytestmark = [
    # instructor 1.3.2 compares its mode with the deprecated Mode.FUNCTIONS on every call.
    pytest.mark.filterwarnings("ignore:FUNCTIONS is deprecated:DeprecationWarning"),
    pytest.mark.timeout(60),
]

CONTEXT = ("The Eiffel Tower is located in Paris, France. It was completed in 1889 and stands "
           "330 metres tall.")
QUESTION = "Where is the Eiffel Tower located?"
FAITHFUL = "The Eiffel Tower is located in Paris. It was completed in 1889."
UNFAITHFUL = "The Eiffel Tower was painted green by Napoleon. Its restaurant serves sushi daily."


@pytest.fixture
def server() -> Iterator[JudgeServer]:
    yield from serve()


def client_for(server: JudgeServer, **kwargs: Any) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.url, api_key="test-key", max_retries=0, **kwargs)


async def chat(client: AsyncOpenAI, text: str = "Hello judge", **kwargs: Any) -> Any:
    return await client.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": text}], **kwargs)


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Evidence(BaseModel):
    quote: str
    page: int = Field(ge=3)


class Verdict(BaseModel):
    label: Literal["supported", "unsupported"]
    colour: Colour
    score: float
    flagged: bool
    evidence: list[Evidence]
    best: Evidence
    note: str | None
    tags: dict[str, int]
    optional_extra: str = "defaulted"


def json_schema_format(model: type[BaseModel]) -> dict[str, Any]:
    return {"type": "json_schema",
            "json_schema": {"name": model.__name__, "schema": model.model_json_schema()}}


# -- the server itself --------------------------------------------------------------------

def _refused(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect((host, port))
        except (ConnectionRefusedError, TimeoutError, OSError):
            return True
        return False


def _outward_address() -> str | None:
    """This machine's address on its default route, if it has one (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 9))
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def test_binds_loopback_only(server: JudgeServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}/v1"
    assert server._httpd.socket.getsockname()[0] == "127.0.0.1"
    assert not _refused("127.0.0.1", server.port)
    # Another loopback address and the machine's own address both find nothing listening.
    assert _refused("127.0.0.2", server.port)
    outward = _outward_address()
    if outward is not None:
        assert _refused(outward, server.port)


def test_valid_reply_follows_the_json_schema_in_response_format(server: JudgeServer) -> None:
    async def go() -> Any:
        async with client_for(server) as client:
            return await chat(client, "Judge this.", response_format=json_schema_format(Verdict))

    reply = asyncio.run(go())
    content = reply.choices[0].message.content
    verdict = Verdict.model_validate_json(content)
    assert verdict.evidence and verdict.best.page >= 3 and verdict.colour is Colour.RED
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens == count_tokens("Judge this.") == 3
    assert reply.usage.completion_tokens == count_tokens(content)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert server.requests[0].schema_title == "Verdict"


def test_minimal_instance_validates_against_pydantic_schemas() -> None:
    for model in (Verdict, Evidence):
        model.model_validate(minimal_instance(model.model_json_schema()))
    schema = {"type": "object", "required": ["n", "xs", "s"],
              "properties": {"n": {"type": "integer", "maximum": 0},
                             "xs": {"type": "array", "items": {"type": "number"}, "minItems": 2},
                             "s": {"type": "string", "minLength": 3}}}
    assert minimal_instance(schema) == {"n": 0, "xs": [1.0, 1.0], "s": "xxx"}


@pytest.mark.parametrize("kind", ["malformed", "truncated", "wrong_schema"])
def test_broken_200_replies(server: JudgeServer, kind: str) -> None:
    server.script(kind)

    async def go() -> Any:
        async with client_for(server) as client:
            return await chat(client, response_format=json_schema_format(Verdict))

    reply = asyncio.run(go())
    content = reply.choices[0].message.content
    assert reply.usage.completion_tokens == count_tokens(content)
    if kind == "wrong_schema":
        assert json.loads(content) == {"answer": 42}
        return
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    if kind == "malformed":
        assert content == MALFORMED_TEXT and "{" not in content
    else:
        assert reply.choices[0].finish_reason == "length"
        assert content.startswith('{"label": ')


def test_429_carries_retry_after_and_an_openai_error_body(server: JudgeServer) -> None:
    server.script(Reply.status(429, retry_after=7))

    async def go() -> None:
        async with client_for(server) as client:
            await chat(client)

    with pytest.raises(openai.RateLimitError) as caught:
        asyncio.run(go())
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limit_exceeded"
    assert server.requests[0].reply == Reply.status(429, retry_after=7)


@pytest.mark.parametrize("code", [500, 503])
def test_server_errors(server: JudgeServer, code: int) -> None:
    server.script(Reply.status(code), Reply.status(code, body={"error": {"message": "custom"}}))

    async def go() -> list[BaseException]:
        errors: list[BaseException] = []
        async with client_for(server) as client:
            for _ in range(2):  # one after the other: the script is consumed in arrival order
                try:
                    await chat(client)
                except openai.APIError as exc:
                    errors.append(exc)
        return errors

    default_body, custom_body = asyncio.run(go())
    for error in (default_body, custom_body):
        assert isinstance(error, openai.InternalServerError) and error.status_code == code
        assert "retry-after" not in error.response.headers
    assert isinstance(default_body, openai.APIStatusError)
    assert default_body.body == {"message": f"scripted HTTP {code} from the judge server",
                                 "type": "server_error", "param": None, "code": None}
    assert isinstance(custom_body, openai.APIStatusError) and custom_body.body == {
        "message": "custom"}


def test_close_and_refused_are_connection_errors(server: JudgeServer) -> None:
    server.script("close")

    async def go(base_url: str) -> None:
        async with AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0) as client:
            await chat(client)

    with pytest.raises(openai.APIConnectionError):
        asyncio.run(go(server.url))
    assert server.count(CHAT_PATH) == 1  # the request was read, then the connection dropped
    with pytest.raises(openai.APIConnectionError):
        asyncio.run(go(f"http://127.0.0.1:{free_port()}/v1"))


def test_slow_reply_and_a_client_timeout(server: JudgeServer) -> None:
    server.script(Reply.slow(0.3), Reply.slow(5))

    async def go() -> float:
        async with client_for(server, timeout=2.0) as client:
            started = time.monotonic()
            reply = await chat(client, response_format={"type": "json_object"})
            elapsed = time.monotonic() - started
            assert reply.choices[0].message.content == "{}"  # JSON mode without a schema
            with pytest.raises(openai.APITimeoutError):
                await chat(client, timeout=0.2)
            return elapsed

    assert asyncio.run(go()) >= 0.3
    assert Reply.slow(3600).seconds == MAX_SLEEP


def test_stop_interrupts_a_slow_reply_and_joins() -> None:
    server = JudgeServer(default=Reply.slow(MAX_SLEEP))
    outcome: list[BaseException | bytes] = []

    def call() -> None:
        request = urllib.request.Request(server.url + "/chat/completions",
                                         data=b'{"model": "m", "messages": []}', method="POST")
        try:
            outcome.append(urllib.request.urlopen(request, timeout=MAX_SLEEP + 5).read())
        except (urllib.error.URLError, OSError) as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while server.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.count() == 1
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    caller.join(timeout=5)
    assert not caller.is_alive() and isinstance(outcome[0], BaseException)
    assert not server._thread.is_alive()
    assert _refused("127.0.0.1", server.port)
    server.stop()  # twice is harmless


def test_context_manager_stops_despite_an_idle_keep_alive_connection() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as idle:
        with JudgeServer() as server:
            port = server.port
            idle.connect(("127.0.0.1", port))  # a pooled connection between requests
            deadline = time.monotonic() + 5
            while not server._connections and time.monotonic() < deadline:
                time.sleep(0.01)
            started = time.monotonic()
        assert time.monotonic() - started < 2
        assert idle.recv(1) == b""  # the server closed it
    assert _refused("127.0.0.1", port)


def test_script_runs_in_order_then_the_default(server: JudgeServer) -> None:
    server.script("wrong_schema", Reply.content('{"fixed": true}'))

    async def go(n: int) -> list[str]:
        async with client_for(server) as client:
            return [(await chat(client)).choices[0].message.content for _ in range(n)]

    assert asyncio.run(go(3)) == ['{"answer": 42}', '{"fixed": true}', "OK"]
    server.default = "malformed"
    assert asyncio.run(go(1)) == [MALFORMED_TEXT]
    assert [r.reply.kind for r in server.requests if r.reply] == [
        "wrong_schema", "content", "valid", "malformed"]
    with pytest.raises(ValueError, match="valid, malformed, truncated, wrong_schema, close"):
        server.script("slow")
    with pytest.raises(ValueError, match="no such endpoint"):
        server.script("valid", path="/v1/completions")


def test_records_requests_headers_and_bodies(server: JudgeServer) -> None:
    async def go() -> None:
        async with client_for(server) as client:
            await chat(client, "patient jane.doe@example.com")
            await client.embeddings.create(model="stub-embed", input=["alpha"])

    asyncio.run(go())
    first, second = server.requests
    assert (first.method, first.path, second.path) == ("POST", CHAT_PATH, EMBEDDINGS_PATH)
    assert first.headers["authorization"] == "Bearer test-key"
    assert first.body["messages"][0]["content"] == "patient jane.doe@example.com"
    assert message_text(first.messages) == "patient jane.doe@example.com"
    assert first.time <= second.time and first.reply == Reply.valid()
    assert "jane.doe@example.com" in server.bodies_text()
    assert "test-key" not in server.bodies_text()
    assert "Bearer test-key" in server.wire_text()
    assert (server.count(), server.count(CHAT_PATH), server.count(EMBEDDINGS_PATH)) == (2, 1, 1)
    server.clear()
    assert server.count() == 0


def test_unknown_paths_and_methods_get_a_404_json_error(server: JudgeServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    with httpx.Client(timeout=5) as http:
        replies = [http.post(base + "/v1/completions", json={"prompt": "x"}),
                   http.get(base + CHAT_PATH),
                   http.post(base + "/", content=b"not json")]
        bad = http.post(base + CHAT_PATH, content=b"not json")
    for reply in replies:
        assert reply.status_code == 404
        assert reply.json()["error"]["type"] == "invalid_request_error"
    assert bad.status_code == 400 and "not a JSON object" in bad.json()["error"]["message"]
    assert server.count() == 4


def test_a_policy_per_schema_title(server: JudgeServer) -> None:
    seen: list[str] = []

    def verdict_policy(schema: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
        seen.append(messages[-1]["content"])
        instance = minimal_instance(schema)
        return {**instance, "label": "unsupported"}

    server.policy("Verdict", verdict_policy)

    async def go() -> str:
        async with client_for(server) as client:
            reply = await chat(client, "x", response_format=json_schema_format(Verdict))
            return str(reply.choices[0].message.content)

    assert Verdict.model_validate_json(asyncio.run(go())).label == "unsupported"
    assert seen == ["x"]


def test_a_failing_policy_is_a_500_that_says_why(server: JudgeServer) -> None:
    def broken(schema: dict[str, Any], messages: list[dict[str, Any]]) -> Any:
        raise KeyError("statements")

    server.policy("Verdict", broken)

    async def go() -> None:
        async with client_for(server) as client:
            await chat(client, response_format=json_schema_format(Verdict))

    with pytest.raises(openai.InternalServerError, match="policy failed: KeyError"):
        asyncio.run(go())


def test_a_custom_tokenizer_counts_usage() -> None:
    with JudgeServer(tokenizer=len) as server:
        async def go() -> Any:
            async with client_for(server) as client:
                return (await chat(client, "abc")).usage, (
                    await client.embeddings.create(model="e", input=["ab", "cde"])).usage

        chat_usage, embed_usage = asyncio.run(go())
    assert (chat_usage.prompt_tokens, chat_usage.completion_tokens) == (3, len("OK"))
    assert embed_usage.prompt_tokens == embed_usage.total_tokens == 5


def test_embeddings_are_deterministic_unit_vectors(server: JudgeServer) -> None:
    texts = ["the tower in paris", "the tower in paris", "paris tower", "sushi restaurant", ""]

    async def go() -> tuple[Any, Any]:
        async with client_for(server) as client:
            decoded = await client.embeddings.create(model="stub-embed", input=texts)
            floats = await client.embeddings.create(model="stub-embed", input=texts[0],
                                                    encoding_format="float")
            return decoded, floats

    decoded, floats = asyncio.run(go())
    # The client asked for base64 (its default) and decoded float32 itself.
    assert server.requests[0].body["encoding_format"] == "base64"
    vectors = [d.embedding for d in decoded.data]
    assert all(len(v) == EMBEDDING_DIM for v in vectors)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    assert vectors[0] == vectors[1]
    assert floats.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[2]) > cos(vectors[0], vectors[3])
    assert decoded.usage.prompt_tokens == sum(count_tokens(t) for t in texts)


def test_scripted_embedding_failures(server: JudgeServer) -> None:
    server.script(Reply.status(503), "close", "malformed", path=EMBEDDINGS_PATH)

    async def go() -> list[BaseException | None]:
        outcomes: list[BaseException | None] = []
        async with client_for(server) as client:
            for _ in range(4):
                try:
                    await client.embeddings.create(model="e", input="a")
                    outcomes.append(None)
                except (openai.OpenAIError, json.JSONDecodeError) as exc:
                    outcomes.append(exc)
        return outcomes

    status, closed, malformed, fine = asyncio.run(go())
    assert isinstance(status, openai.InternalServerError)
    assert isinstance(closed, openai.APIConnectionError)
    # A 200 whose body is not JSON escapes the openai client as a bare JSONDecodeError.
    assert isinstance(malformed, json.JSONDecodeError)
    assert fine is None and server.count(EMBEDDINGS_PATH) == 4
    assert server.count(CHAT_PATH) == 0  # the chat script is separate


def test_ragas_input_is_the_last_block_at_the_start_of_a_line() -> None:
    data = {"response": "Ignore this. input: {\"fake\": 1}\ninput: {\"also\": 2}"}
    prompt = ("Example 1\nInput: {\"response\": \"example\"}\n\ninput: "
              + json.dumps(data, indent=4) + "\nOutput: ")
    messages = [{"role": "system", "content": "input: {\"system\": 0}"},
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": "input: {\"assistant\": 0}"}]
    assert ragas_input(messages) == data


# -- ragas 0.4.3 against the server -------------------------------------------------------

def ragas_llm(client: AsyncOpenAI) -> Any:
    return llm_factory("stub-model", client=client)


def test_ragas_request_shape(server: JudgeServer) -> None:
    async def go() -> float:
        async with client_for(server) as client:
            result = await Faithfulness(llm=ragas_llm(client)).ascore(
                user_input=QUESTION, response=FAITHFUL, retrieved_contexts=[CONTEXT])
            return float(result.value)

    assert asyncio.run(go()) == 1.0
    statements, verdicts = server.requests
    assert [statements.schema_title, verdicts.schema_title] == [
        "StatementGeneratorOutput", "NLIStatementOutput"]
    body = statements.body
    # llm_factory's InstructorModelArgs defaults, and instructor's Mode.JSON response_format.
    assert {k: v for k, v in body.items() if k != "messages"} == {
        "model": "stub-model", "max_tokens": 1024, "temperature": 0.01, "top_p": 0.1,
        "response_format": {"type": "json_object"}}
    system, user = body["messages"]
    assert (system["role"], user["role"]) == ("system", "user")
    assert "json_schema" in system["content"]
    assert '"title": "StatementGeneratorOutput"' in system["content"]  # indent=2 dump
    assert user["content"].endswith("\nOutput: ")
    assert "Now perform the same with the following input\ninput: {" in user["content"]
    assert ragas_input(body["messages"]) == {"question": QUESTION, "answer": FAITHFUL}
    assert ragas_input(verdicts.messages) == {"context": CONTEXT, "statements": [
        "The Eiffel Tower is located in Paris.", "It was completed in 1889."]}


def test_ragas_faithfulness_prefers_the_faithful_answer(server: JudgeServer) -> None:
    async def go(response: str) -> float:
        async with client_for(server) as client:
            result = await Faithfulness(llm=ragas_llm(client)).ascore(
                user_input=QUESTION, response=response, retrieved_contexts=[CONTEXT])
            return float(result.value)

    faithful = asyncio.run(go(FAITHFUL))
    calls = server.count(CHAT_PATH)
    unfaithful = asyncio.run(go(UNFAITHFUL))
    print(f"\nfaithfulness: {calls} chat calls per score; faithful={faithful} "
          f"unfaithful={unfaithful}")
    assert (faithful, unfaithful) == (1.0, 0.0)
    assert calls == 2 and server.count(CHAT_PATH) == 4


def test_ragas_groundedness_and_context_relevance(server: JudgeServer) -> None:
    async def go() -> dict[str, float]:
        async with client_for(server) as client:
            llm = ragas_llm(client)
            grounded = await ResponseGroundedness(llm=llm).ascore(
                response=FAITHFUL, retrieved_contexts=[CONTEXT])
            ungrounded = await ResponseGroundedness(llm=llm).ascore(
                response=UNFAITHFUL, retrieved_contexts=[CONTEXT])
            mark = server.count(CHAT_PATH)
            relevant = await ContextRelevance(llm=llm).ascore(
                user_input=QUESTION, retrieved_contexts=[CONTEXT])
            irrelevant = await ContextRelevance(llm=llm).ascore(
                user_input="How do sushi chefs sharpen knives?", retrieved_contexts=[CONTEXT])
            return {"grounded": grounded.value, "ungrounded": ungrounded.value,
                    "grounded_calls": mark / 2, "relevant": relevant.value,
                    "irrelevant": irrelevant.value,
                    "relevance_calls": (server.count(CHAT_PATH) - mark) / 2}

    got = asyncio.run(go())
    print(f"\nresponse groundedness: {got['grounded_calls']:.0f} chat calls per score; "
          f"context relevance: {got['relevance_calls']:.0f}; {got}")
    assert got["grounded_calls"] == 2 and got["relevance_calls"] == 2
    assert (got["grounded"], got["ungrounded"]) == (1.0, 0.0)
    assert (got["relevant"], got["irrelevant"]) == (1.0, 0.0)
    titles = [r.schema_title for r in server.requests]
    assert titles == ["ResponseGroundednessOutput"] * 4 + ["ContextRelevanceOutput"] * 4


def test_ragas_answer_relevancy_with_embeddings(server: JudgeServer) -> None:
    async def go(response: str) -> float:
        async with client_for(server) as client:
            metric = AnswerRelevancy(llm=ragas_llm(client), strictness=1,
                                     embeddings=OpenAIEmbeddings(client=client, model="stub-embed"))
            return float((await metric.ascore(user_input=QUESTION, response=response)).value)

    relevant = asyncio.run(go("The Eiffel Tower is located in Paris."))
    chats, embeds = server.count(CHAT_PATH), server.count(EMBEDDINGS_PATH)
    evasive = asyncio.run(go("I don't know where the Eiffel Tower is located."))
    print(f"\nanswer relevancy (strictness=1): {chats} chat + {embeds} embeddings calls; "
          f"relevant={relevant:.3f} evasive={evasive}")
    assert (chats, embeds) == (1, 2)  # the question, then the generated questions as one batch
    assert [r.body["input"] for r in server.requests if r.path == EMBEDDINGS_PATH][:2] == [
        QUESTION, ["Is The Eiffel Tower located in Paris?"]]
    assert relevant > 0.5 and evasive == 0.0


def test_ragas_failure_handling(server: JudgeServer) -> None:
    """How a broken judge reaches ragas's caller: instructor makes 3 attempts at every call
    (re-asking after bad JSON, and also repeating HTTP errors at once, Retry-After unread);
    Faithfulness lets the last error out, while ResponseGroundedness and ContextRelevance catch
    every exception, try 5 times per judge, and return NaN."""

    async def faithfulness() -> float:
        async with client_for(server) as client:
            return float((await Faithfulness(llm=ragas_llm(client)).ascore(
                user_input=QUESTION, response=FAITHFUL, retrieved_contexts=[CONTEXT])).value)

    async def groundedness() -> float:
        async with client_for(server) as client:
            return float((await ResponseGroundedness(llm=ragas_llm(client)).ascore(
                response=FAITHFUL, retrieved_contexts=[CONTEXT])).value)

    cases: list[tuple[Reply | str, type[BaseException]]] = [
        ("malformed", InstructorRetryException), ("wrong_schema", InstructorRetryException),
        ("truncated", IncompleteOutputException), (Reply.status(429, retry_after=30),
                                                    openai.RateLimitError),
        (Reply.status(503), openai.InternalServerError), ("close", openai.APIConnectionError)]
    for reply, error in cases:
        server.clear()
        server.default = reply
        started = time.monotonic()
        with pytest.raises(error):
            asyncio.run(faithfulness())
        assert server.count(CHAT_PATH) == 3, reply
        assert time.monotonic() - started < 5  # Retry-After: 30 was not waited for
    # The re-ask after bad JSON carries the bad reply and the validation error.
    server.clear()
    server.default = "malformed"
    with pytest.raises(InstructorRetryException):
        asyncio.run(faithfulness())
    roles = [m["role"] for m in server.requests[-1].messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert server.requests[-1].messages[2]["content"] == MALFORMED_TEXT

    for reply in ("malformed", Reply.status(429, retry_after=30)):
        server.clear()
        server.default = reply
        assert math.isnan(asyncio.run(groundedness()))
        assert server.count(CHAT_PATH) == 2 * 5 * 3, reply
    print("\nfailures: Faithfulness raises after 3 requests; ResponseGroundedness returns NaN "
          "after 30 (2 judges x 5 ragas tries x 3 instructor attempts)")
