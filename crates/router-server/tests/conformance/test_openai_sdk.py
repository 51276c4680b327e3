"""Conformance of router-server with the official OpenAI Python SDK.

Run by `cargo xtask conformance` with the pinned SDK from requirements.txt:

    target/conformance-venv/bin/python crates/router-server/tests/conformance/test_openai_sdk.py \
        --server target/debug/router-server

Each check talks to one router-server started on port 0 with the mock provider; the
Anthropic check starts its own, on an in-process upstream replaying recorded streams. The
script ends with `N passed, N failed` and exits non-zero when anything failed.
"""

from __future__ import annotations

import argparse
import base64
import os
import struct
import sys
import traceback
from pathlib import Path
from typing import Callable

import openai

from recorded_upstream import RecordedUpstream
from router_harness import CLIENT_KEY, LIMITED_KEY, MODEL, RouterServer, ServerError

PROMPT = "Say hello to the conformance suite"
EXPECTED_CONTENT = f"This is a mock response to: {PROMPT}"
MESSAGES = [{"role": "user", "content": PROMPT}]

Check = Callable[["Context"], None]
CHECKS: list[tuple[str, Check]] = []


def check(function: Check) -> Check:
    CHECKS.append((function.__name__, function))
    return function


class Context:
    def __init__(self, server: RouterServer) -> None:
        self.server = server
        # No retries: an error must surface as the first answer, and fast.
        self.client = openai.OpenAI(base_url=server.base_url, api_key=CLIENT_KEY,
                                    max_retries=0, timeout=30)

    def client_with_key(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.server.base_url, api_key=key, max_retries=0, timeout=30)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def expect_status_error(error_type: type[openai.APIStatusError], call: Callable[[], object],
                        status: Callable[[int], bool], status_text: str) -> openai.APIStatusError:
    try:
        result = call()
    except openai.APIStatusError as error:
        expect(isinstance(error, error_type),
               f"expected {error_type.__name__}, got {type(error).__name__} ({error.status_code}): {error}")
        expect(status(error.status_code), f"expected status {status_text}, got {error.status_code}")
        expect_openai_error_body(error)
        return error
    raise AssertionError(f"expected {error_type.__name__}, the call returned {result!r}")


def expect_openai_error_body(error: openai.APIStatusError) -> None:
    """The body is OpenAI's `{"error": {"message", "type", "param", "code"}}`; the SDK
    hands over the inner object as `error.body`."""
    body = error.body
    expect(isinstance(body, dict), f"error body is not a JSON object: {body!r}")
    for field in ("message", "type", "param", "code"):
        expect(field in body, f"error body has no `{field}`: {body!r}")
    expect(isinstance(body["message"], str) and body["message"],
           f"error message is not a non-empty string: {body!r}")
    expect(body["code"] is None or isinstance(body["code"], str),
           f"error code is neither a string nor null: {body!r}")


@check
def models_list_contains_mock_gpt(ctx: Context) -> None:
    page = ctx.client.models.list()
    ids = [model.id for model in page.data]
    expect(MODEL in ids, f"{MODEL} not in {ids}")
    for model in page.data:
        expect(model.object == "model", f"model object is {model.object!r}")
        expect(isinstance(model.created, int), f"model created is {model.created!r}")
        expect(isinstance(model.owned_by, str), f"model owned_by is {model.owned_by!r}")


@check
def models_retrieve_mock_gpt(ctx: Context) -> None:
    model = ctx.client.models.retrieve(MODEL)
    expect(model.id == MODEL, f"retrieved id is {model.id!r}")
    expect(model.object == "model", f"model object is {model.object!r}")


def non_stream_completion(ctx: Context) -> openai.types.chat.ChatCompletion:
    return ctx.client.chat.completions.create(model=MODEL, messages=MESSAGES)


@check
def chat_completion(ctx: Context) -> None:
    completion = non_stream_completion(ctx)
    expect(completion.object == "chat.completion", f"object is {completion.object!r}")
    expect(completion.model == MODEL, f"model is {completion.model!r}, not the client-facing {MODEL!r}")
    expect(bool(completion.id), "id is empty")
    expect(len(completion.choices) == 1, f"{len(completion.choices)} choices")
    choice = completion.choices[0]
    expect(choice.message.role == "assistant", f"role is {choice.message.role!r}")
    expect(choice.message.content == EXPECTED_CONTENT,
           f"content is {choice.message.content!r}, expected {EXPECTED_CONTENT!r}")
    expect(choice.finish_reason == "stop", f"finish_reason is {choice.finish_reason!r}")
    usage = completion.usage
    expect(usage is not None, "no usage")
    expect(usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"usage is {usage}")
    expect(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage is {usage}")


@check
def streamed_chat_completion_with_usage(ctx: Context) -> None:
    stream = ctx.client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    content_chunks: list[str] = []
    finish_reasons: list[str] = []
    usage_chunks = []
    for chunk in stream:
        expect(chunk.object == "chat.completion.chunk", f"chunk object is {chunk.object!r}")
        expect(chunk.model == MODEL, f"chunk model is {chunk.model!r}")
        for choice in chunk.choices:
            if choice.delta.content:
                content_chunks.append(choice.delta.content)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
        if chunk.usage is not None:
            usage_chunks.append(chunk)
    content = "".join(content_chunks)
    expect(content == EXPECTED_CONTENT, f"streamed content is {content!r}, expected {EXPECTED_CONTENT!r}")
    expect(content == non_stream_completion(ctx).choices[0].message.content,
           "streamed and non-streamed content differ")
    expect(len(content_chunks) > 1, f"the answer came in {len(content_chunks)} content chunk(s), not streamed")
    expect(finish_reasons == ["stop"], f"finish reasons are {finish_reasons}")
    expect(len(usage_chunks) == 1, f"{len(usage_chunks)} chunks carried usage, expected exactly 1")
    usage_chunk = usage_chunks[0]
    expect(usage_chunk.choices == [], f"the usage chunk has choices: {usage_chunk.choices}")
    usage = usage_chunk.usage
    expect(usage.completion_tokens > 0 and usage.prompt_tokens > 0, f"usage is {usage}")
    expect(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage is {usage}")


@check
def streamed_chat_completion_without_stream_options(ctx: Context) -> None:
    # Like the Go router it replaces, the router always asks upstream for usage and
    # passes the usage chunk on (seed-behaviour.md, row 40), so the one chunk allowed
    # to have no choices is the one carrying usage.
    stream = ctx.client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    content = ""
    for chunk in stream:
        expect(chunk.model == MODEL, f"chunk model is {chunk.model!r}")
        if not chunk.choices:
            expect(chunk.usage is not None, f"a chunk has neither choices nor usage: {chunk}")
            continue
        content += chunk.choices[0].delta.content or ""
    expect(content == EXPECTED_CONTENT, f"streamed content is {content!r}")


@check
def wrong_key_is_authentication_error(ctx: Context) -> None:
    client = ctx.client_with_key("sk-not-a-router-key")
    error = expect_status_error(
        openai.AuthenticationError,
        lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES),
        lambda status: status == 401, "401")
    expect(error.body["message"] == "Invalid API key", f"message is {error.body['message']!r}")


@check
def unknown_model_is_not_found(ctx: Context) -> None:
    expect_status_error(
        openai.NotFoundError,
        lambda: ctx.client.chat.completions.create(model="no-such-model", messages=MESSAGES),
        lambda status: status == 404, "404")


@check
def malformed_request_is_bad_request(ctx: Context) -> None:
    # extra_body overrides the typed field, so the wire carries a string, not a list.
    expect_status_error(
        openai.BadRequestError,
        lambda: ctx.client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_body={"messages": "not a list"}),
        lambda status: status == 400, "400")


@check
def failing_upstream_is_server_error(ctx: Context) -> None:
    # mock-gpt has one entry; when it fails there is nothing to fail over to.
    expect_status_error(
        openai.InternalServerError,
        lambda: ctx.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "mock:error:500"}]),
        lambda status: 500 <= status < 600, "5xx")


@check
def failing_upstream_stream_is_server_error_before_sse(ctx: Context) -> None:
    # The upstream fails before its first chunk, so the client must get an HTTP error,
    # not a 200 event stream that carries the error.
    expect_status_error(
        openai.InternalServerError,
        lambda: ctx.client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "mock:error:500"}], stream=True),
        lambda status: 500 <= status < 600, "5xx")


@check
def rate_limit_is_rate_limit_error_with_retry_after(ctx: Context) -> None:
    client = ctx.client_with_key(LIMITED_KEY)
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    error = expect_status_error(
        openai.RateLimitError,
        lambda: client.chat.completions.create(model=MODEL, messages=MESSAGES),
        lambda status: status == 429, "429")
    retry_after = error.response.headers.get("retry-after")
    expect(retry_after is not None and retry_after.isdigit() and 1 <= int(retry_after) <= 60,
           f"Retry-After should be whole seconds within the minute, got {retry_after!r}")
    body = error.body if isinstance(error.body, dict) else {}
    expect(body.get("code") == "rate_limit_exceeded", f"code: {body!r}")
    expect("key rpm" in str(body.get("message")), f"message should name the limit: {body!r}")


# The mock's embeddings have 8 dimensions unless asked otherwise.
MOCK_DIMENSIONS = 8


@check
def embeddings_of_a_string(ctx: Context) -> None:
    # Without encoding_format the SDK asks for base64 and decodes it itself, so this
    # also checks that the base64 is OpenAI's (little-endian float32).
    response = ctx.client.embeddings.create(model=MODEL, input=PROMPT)
    expect(response.object == "list", f"object is {response.object!r}")
    expect(response.model == MODEL, f"model is {response.model!r}, not the client-facing {MODEL!r}")
    expect(len(response.data) == 1, f"{len(response.data)} embeddings")
    item = response.data[0]
    expect(item.object == "embedding" and item.index == 0, f"embedding is {item}")
    expect(len(item.embedding) == MOCK_DIMENSIONS and all(-1 <= x < 1 for x in item.embedding),
           f"embedding is {item.embedding}")
    expect(response.usage.prompt_tokens > 0, f"usage is {response.usage}")
    expect(response.usage.total_tokens == response.usage.prompt_tokens, f"usage is {response.usage}")
    floats = ctx.client.embeddings.create(model=MODEL, input=PROMPT, encoding_format="float")
    expect(floats.data[0].embedding == item.embedding,
           "float and decoded base64 embeddings of the same text differ")


@check
def embeddings_of_an_array(ctx: Context) -> None:
    response = ctx.client.embeddings.create(model=MODEL, input=["first", "second", PROMPT],
                                            encoding_format="float")
    expect([item.index for item in response.data] == [0, 1, 2],
           f"indices are {[item.index for item in response.data]}")
    single = ctx.client.embeddings.create(model=MODEL, input=PROMPT, encoding_format="float")
    expect(response.data[2].embedding == single.data[0].embedding,
           "the same text embedded alone and in an array differs")
    tokens = ctx.client.embeddings.create(model=MODEL, input=[[1, 2, 3], [4]], encoding_format="float")
    expect(len(tokens.data) == 2, f"{len(tokens.data)} embeddings of two token arrays")


@check
def embeddings_encoding_format_base64_passes_through(ctx: Context) -> None:
    # Asked explicitly, the SDK hands the base64 text over as it came.
    response = ctx.client.embeddings.create(model=MODEL, input=PROMPT, encoding_format="base64")
    encoded = response.data[0].embedding
    expect(isinstance(encoded, str), f"embedding is not base64 text: {encoded!r}")
    decoded = list(struct.unpack(f"<{MOCK_DIMENSIONS}f", base64.b64decode(encoded)))
    floats = ctx.client.embeddings.create(model=MODEL, input=PROMPT, encoding_format="float")
    expect(decoded == floats.data[0].embedding, "base64 and float embeddings differ")


@check
def embeddings_bad_input_is_bad_request(ctx: Context) -> None:
    error = expect_status_error(
        openai.BadRequestError,
        lambda: ctx.client.embeddings.create(model=MODEL, input=[]),
        lambda status: status == 400, "400")
    expect(error.body.get("param") == "input", f"param: {error.body!r}")


@check
def text_completion(ctx: Context) -> None:
    completion = ctx.client.completions.create(model=MODEL, prompt=PROMPT)
    expect(completion.object == "text_completion", f"object is {completion.object!r}")
    expect(completion.model == MODEL, f"model is {completion.model!r}")
    expect(len(completion.choices) == 1, f"{len(completion.choices)} choices")
    choice = completion.choices[0]
    expect(choice.text == EXPECTED_CONTENT, f"text is {choice.text!r}, expected {EXPECTED_CONTENT!r}")
    expect(choice.finish_reason == "stop", f"finish_reason is {choice.finish_reason!r}")
    usage = completion.usage
    expect(usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0,
           f"usage is {usage}")
    expect(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage is {usage}")


@check
def streamed_text_completion(ctx: Context) -> None:
    stream = ctx.client.completions.create(model=MODEL, prompt=PROMPT, stream=True,
                                           stream_options={"include_usage": True})
    pieces: list[str] = []
    finish_reasons: list[str] = []
    usage_chunks = 0
    for chunk in stream:
        expect(chunk.object == "text_completion", f"chunk object is {chunk.object!r}")
        expect(chunk.model == MODEL, f"chunk model is {chunk.model!r}")
        for choice in chunk.choices:
            pieces.append(choice.text)
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
        if chunk.usage is not None:
            usage_chunks += 1
    text = "".join(pieces)
    expect(text == EXPECTED_CONTENT, f"streamed text is {text!r}, expected {EXPECTED_CONTENT!r}")
    expect(len([piece for piece in pieces if piece]) > 1, "the answer was not streamed")
    expect(finish_reasons == ["stop"], f"finish reasons are {finish_reasons}")
    expect(usage_chunks == 1, f"{usage_chunks} chunks carried usage, expected exactly 1")


@check
def failing_upstream_completion_is_server_error(ctx: Context) -> None:
    expect_status_error(
        openai.InternalServerError,
        lambda: ctx.client.completions.create(model=MODEL, prompt="mock:error:500", stream=True),
        lambda status: 500 <= status < 600, "5xx")


# Two entries answering the same recorded tool-calling answer: `claude-tools` through
# the anthropic adapter (Anthropic's stream, translated), `gpt-tools` through the
# openai adapter (OpenAI's own stream of that answer).
TOOLS_CONFIG = """\
server:
  host: 127.0.0.1
  port: 0
limits:
  ledger: false
models:
  - name: claude-tools
    provider: anthropic
    base_url: {anthropic}
    provider_api_key: ["ak-conformance"]
    enabled: true
    visible: true
  - name: gpt-tools
    provider: openai
    base_url: {openai}
    provider_api_key: ["sk-conformance"]
    enabled: true
    visible: true
api_keys:
  - id: 1
    key: sk-router-dev-key
    name: dev
    is_active: true
"""

WEATHER_TOOLS = [{"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]


def tool_call_chunks(client: openai.OpenAI, model: str) -> list[dict]:
    """The chunks of one streamed answer as the SDK parsed them, without what differs
    by nature between two upstreams (ids, times, model names, fingerprints) and with
    usage reduced to the token counts."""
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Weather in Paris and Tokyo?"}],
        tools=WEATHER_TOOLS, stream=True, stream_options={"include_usage": True})
    chunks = []
    for chunk in stream:
        expect(chunk.object == "chat.completion.chunk", f"chunk object is {chunk.object!r}")
        expect(chunk.model == model, f"chunk model is {chunk.model!r}, not {model!r}")
        data = chunk.model_dump(exclude={"id", "created", "model", "system_fingerprint", "service_tier"})
        if chunk.usage is not None:
            data["usage"] = {"prompt_tokens": chunk.usage.prompt_tokens,
                             "completion_tokens": chunk.usage.completion_tokens,
                             "total_tokens": chunk.usage.total_tokens}
        chunks.append(data)
    return chunks


@check
def streamed_tool_calls_through_anthropic_match_native_openai(ctx: Context) -> None:
    with RecordedUpstream() as upstream:
        config = TOOLS_CONFIG.format(anthropic=upstream.root, openai=f"{upstream.root}/v1")
        with RouterServer(ctx.server.binary, config=config) as server:
            client = openai.OpenAI(base_url=server.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=30)
            native = tool_call_chunks(client, "gpt-tools")
            translated = tool_call_chunks(client, "claude-tools")
    for index, (got, want) in enumerate(zip(translated, native)):
        expect(got == want, f"chunk {index} differs:\n  anthropic: {got}\n  native:    {want}")
    expect(len(translated) == len(native), f"{len(translated)} chunks, native {len(native)}")
    calls: dict[int, str] = {}
    for chunk in native:
        for choice in chunk["choices"]:
            for call in choice["delta"].get("tool_calls") or []:
                calls[call["index"]] = calls.get(call["index"], "") + call["function"]["arguments"]
    expect(calls == {0: '{"location": "Paris"}', 1: '{"location": "Tokyo"}'}, f"tool calls: {calls}")
    expect(native[-2]["choices"][0]["finish_reason"] == "tool_calls", f"finish: {native[-2]}")
    expect(native[-1]["usage"]["total_tokens"] == 135, f"usage: {native[-1]}")


def default_server() -> str:
    if "ROUTER_SERVER_BIN" in os.environ:
        return os.environ["ROUTER_SERVER_BIN"]
    root = Path(__file__).resolve().parents[4]
    return str(root / "target" / "debug" / "router-server")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=default_server(), help="path to the router-server binary")
    args = parser.parse_args()

    print(f"openai SDK {openai.__version__}, server {args.server}")
    passed = failed = 0
    try:
        with RouterServer(args.server) as server:
            print(f"router-server listening at {server.address}")
            ctx = Context(server)
            for name, function in CHECKS:
                try:
                    function(ctx)
                except Exception as error:  # noqa: BLE001 - every failure is reported
                    failed += 1
                    print(f"FAIL {name}: {type(error).__name__}: {error}")
                    if not isinstance(error, AssertionError):
                        traceback.print_exc(file=sys.stdout)
                else:
                    passed += 1
                    print(f"ok   {name}")
            if failed:
                print("--- router-server output ---")
                print(server.output(), end="")
                print("--- end of router-server output ---")
    except ServerError as error:
        print(f"FAIL router-server did not start: {error}")
        failed += len(CHECKS) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
