"""Tests for addon.sse.SSEParser: OpenAI/Anthropic/OpenGradient streams, robustness."""

from __future__ import annotations

import hashlib

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from receipts.addon.sse import SSEParser

SETTINGS = settings(max_examples=150, deadline=None)

TEE = {
    "tee_signature": "c2lnbmF0dXJlLWJ5dGVz",
    "tee_request_hash": "0x" + "11" * 32,
    "tee_output_hash": "0x" + "22" * 32,
    "tee_timestamp": 1740000123,
    "tee_id": "0x" + "33" * 32,
}


def sse(*objs: object, sep: bytes = b"\n") -> bytes:
    out = b""
    for obj in objs:
        data = obj if isinstance(obj, bytes) else orjson.dumps(obj)
        out += b"data: " + data + sep + sep
    return out


def openai_chunk(content: str | None = None, usage: dict | None = None, **extra: object) -> dict:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    return {"id": "chatcmpl-abc123", "object": "chat.completion.chunk", "model": "gpt-4.1",
            "choices": choices, "usage": usage, **extra}


def openai_stream(sep: bytes = b"\n") -> bytes:
    return sse(
        {"id": "chatcmpl-abc123", "object": "chat.completion.chunk", "model": "gpt-4.1",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None},
        openai_chunk("Hel"),
        openai_chunk("lo, wörld"),
        openai_chunk(usage={"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}),
        {**TEE, "data_settlement_transaction_hash": "0x" + "44" * 32,
         "data_settlement_blob_id": "blob-xyz"},
        b"[DONE]",
        sep=sep,
    )


def anthropic_stream() -> bytes:
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_01XYZ", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4", "content": [],
            "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hi "}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "there"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 7}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
                    for name, obj in events)


def run(data: bytes, chunks: list[int] | None = None, **kwargs: int) -> dict:
    parser = SSEParser(**kwargs)
    if chunks is None:
        parser.feed(data)
    else:
        start = 0
        for end in sorted(chunks) + [len(data)]:
            parser.feed(data[start:end])
            start = end
    parser.close()
    return parser.summary()


# ---------------------------------------------------------------- examples

def test_openai_stream() -> None:
    data = openai_stream()
    summary = run(data)
    assert summary["events"] == 6
    assert summary["bytes"] == len(data)
    assert summary["done"] is True
    assert summary["id"] == "chatcmpl-abc123"
    assert summary["model"] == "gpt-4.1"
    assert summary["usage"] == {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
    assert summary["tee"] == TEE
    assert summary["settlement"] == {"data_settlement_transaction_hash": "0x" + "44" * 32,
                                     "data_settlement_blob_id": "blob-xyz"}
    text = "Hello, wörld"
    assert summary["output_text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert summary["output_chars"] == len(text)
    assert summary["errors"] == []
    orjson.dumps(summary)


def test_line_endings_equivalent() -> None:
    lf = run(openai_stream(b"\n"))
    for sep in (b"\r\n", b"\r"):
        other = run(openai_stream(sep))
        assert {k: v for k, v in other.items() if k != "bytes"} == \
            {k: v for k, v in lf.items() if k != "bytes"}


def test_crlf_split_across_chunks() -> None:
    data = openai_stream(b"\r\n")
    cut = data.index(b"\r\n") + 1
    assert run(data, [cut]) == run(data)


def test_anthropic_stream() -> None:
    summary = run(anthropic_stream())
    assert summary["done"] is True
    assert summary["id"] == "msg_01XYZ"
    assert summary["model"] == "claude-sonnet-4"
    assert summary["usage"] == {"prompt_tokens": 25, "completion_tokens": 7, "total_tokens": 32}
    assert summary["output_text_sha256"] == hashlib.sha256(b"Hi there").hexdigest()
    assert summary["output_chars"] == 8
    assert summary["tee"] is None and summary["settlement"] is None
    assert summary["errors"] == []


def test_openai_responses_stream() -> None:
    # typed events of the Responses API (`stream=True`): the usage comes with response.completed
    response = {"id": "resp_67c", "object": "response", "model": "gpt-4.1-mini", "status": "in_progress",
                "usage": None}
    data = sse({"type": "response.created", "sequence_number": 0, "response": response},
               {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
                "item": {"id": "msg_1", "type": "message", "role": "assistant", "content": []}},
               {"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1", "delta": "Hi "},
               {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1", "delta": "you"},
               {"type": "response.completed", "sequence_number": 4,
                "response": {**response, "status": "completed",
                             "usage": {"input_tokens": 11, "output_tokens": 2, "total_tokens": 13,
                                       "output_tokens_details": {"reasoning_tokens": 0}}}})
    summary = run(data)
    assert (summary["id"], summary["model"], summary["done"]) == ("resp_67c", "gpt-4.1-mini", True)
    assert summary["usage"] == {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
    assert summary["output_text_sha256"] == hashlib.sha256(b"Hi you").hexdigest()
    assert summary["errors"] == []


def test_gemini_stream() -> None:
    # streamGenerateContent?alt=sse: each chunk carries the usage so far; the last one counts
    def chunk(text, prompt, out):
        return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
                "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": out,
                                  "totalTokenCount": prompt + out},
                "modelVersion": "gemini-2.0-flash", "responseId": "gem-1"}
    assert run(sse(chunk("Hel", 6, 1)))["done"] is False
    last = chunk("lo", 6, 3)
    last["candidates"][0]["finishReason"] = "STOP"
    summary = run(sse(chunk("Hel", 6, 1), last))
    assert (summary["id"], summary["model"], summary["done"]) == ("gem-1", "gemini-2.0-flash", True)
    assert summary["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}
    assert summary["output_text_sha256"] == hashlib.sha256(b"Hello").hexdigest()


def test_anthropic_without_message_delta_has_unknown_output() -> None:
    start = {"type": "message_start", "message": {"id": "msg_2", "model": "claude",
                                                  "usage": {"input_tokens": 5,
                                                            "output_tokens": 1}}}
    summary = run(sse(start))
    assert summary["usage"] == {"prompt_tokens": 5, "completion_tokens": None,
                                "total_tokens": None}
    assert summary["done"] is False


def test_usage_unknown_is_none() -> None:
    summary = run(sse(openai_chunk("x"), b"[DONE]"))
    assert summary["usage"] is None
    assert summary["output_chars"] == 1


def test_last_tee_event_wins_and_job_id() -> None:
    first = {**TEE, "tee_timestamp": 1}
    last = {"tee_signature": "bGFzdA==", "tee_id": "0xabc", "settlement_job_id": "job-1"}
    summary = run(sse(first, openai_chunk("a"), last, b"[DONE]"))
    assert summary["tee"] == {"tee_signature": "bGFzdA==", "tee_id": "0xabc"}
    assert summary["settlement"] == {"settlement_job_id": "job-1"}


def test_spec_details_multiline_comment_bom_no_space() -> None:
    data = (b"\xef\xbb\xbf: keep-alive comment\n"
            b"retry: 1000\nid: 7\nevent: chunk\n"
            b"data: {\"id\": \"chatcmpl-1\",\n"
            b"data:  \"choices\": [{\"delta\": {\"content\": \"ok\"}}]}\n\n"
            b"data:[DONE]\n\n")
    summary = run(data)
    assert summary["events"] == 2
    assert summary["id"] == "chatcmpl-1"
    assert summary["output_chars"] == 2
    assert summary["done"] is True
    assert summary["errors"] == []


def test_invalid_json_and_non_utf8() -> None:
    summary = run(b"data: {nope\n\ndata: \xff\xfe\n\ndata: [DONE]\n\n")
    assert summary["done"] is True
    assert summary["events"] == 3
    assert any("JSON" in e for e in summary["errors"])
    assert any("UTF-8" in e for e in summary["errors"])


def test_unterminated_final_event_is_kept_with_error() -> None:
    summary = run(b'data: {"usage": {"prompt_tokens": 3}}')
    assert summary["events"] == 1
    assert summary["usage"] == {"prompt_tokens": 3, "completion_tokens": None,
                                "total_tokens": None}
    assert any("unterminated" in e for e in summary["errors"])


def test_oversized_line_dropped_then_resync() -> None:
    big = b"data: " + b"x" * 5000 + b"\n\n"
    data = big + sse(openai_chunk("after"), b"[DONE]")
    for chunks in (None, list(range(0, len(data), 100))):
        summary = run(data, chunks, max_event_bytes=1024)
        assert summary["events"] == 2
        assert summary["done"] is True
        assert summary["output_chars"] == 5
        assert summary["error_count"] == 1
        assert "longer than 1024" in summary["errors"][0]


def test_oversized_multiline_event_dropped() -> None:
    line = b"data: " + b"y" * 600 + b"\n"
    data = line * 3 + b"\n" + sse(b"[DONE]")
    summary = run(data, max_event_bytes=1024)
    assert summary["events"] == 1 and summary["done"] is True
    assert summary["error_count"] == 1


def test_errors_list_capped() -> None:
    summary = run(b"data: {bad\n\n" * 50)
    assert len(summary["errors"]) == 20
    assert summary["error_count"] == 50


def test_feed_after_close_and_non_bytes() -> None:
    parser = SSEParser()
    parser.feed("data: text\n\n")  # type: ignore[arg-type]
    parser.feed(None)  # type: ignore[arg-type]
    parser.close()
    parser.close()
    parser.feed(b"data: [DONE]\n\n")
    summary = parser.summary()
    assert summary["done"] is False
    assert summary["error_count"] == 3


def test_memory_bounded_on_endless_line() -> None:
    parser = SSEParser()
    chunk = b"a" * (64 * 1024)
    for _ in range(20 * 16):  # 20 MiB, no line break
        parser.feed(chunk)
        assert len(parser._buf) <= parser.max_event_bytes
    summary = parser.summary()
    assert summary["bytes"] == 20 * 1024 * 1024
    assert summary["error_count"] == 1 and "longer than" in summary["errors"][0]
    parser.feed(b"\n\n" + sse(openai_chunk("z"), b"[DONE]"))
    parser.close()
    summary = parser.summary()
    assert summary["done"] is True and summary["output_chars"] == 1


# ---------------------------------------------------------------- properties

PIECES = [b"data: ", b"data:", b"event: message_stop", b"\n", b"\r", b"\r\n", b"\n\n",
          b": comment", b"[DONE]", b"\xff", b"\xef\xbb\xbf", b"{", b"}",
          orjson.dumps(openai_chunk("h\u00e9llo")), orjson.dumps(openai_chunk("?")),
          orjson.dumps({"type": "message_start", "message": {"id": "m", "usage":
                        {"input_tokens": 2}}}),
          orjson.dumps({"type": "message_delta", "usage": {"output_tokens": 3}}),
          orjson.dumps({"type": "content_block_delta", "delta": {"text": "t"}}),
          orjson.dumps(TEE), b"x" * 70]

streams = st.lists(st.sampled_from(PIECES) | st.binary(max_size=12), max_size=40).map(b"".join)


@SETTINGS
@given(st.data(), streams, st.sampled_from([48, 100, 1024 * 1024]))
def test_chunking_does_not_change_summary(data: st.DataObject, stream: bytes,
                                          limit: int) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    whole = run(stream, max_event_bytes=limit)
    assert not [e for e in whole["errors"] if "internal error" in e], whole["errors"]  # (feed/close swallow)
    assert run(stream, cuts, max_event_bytes=limit) == whole
    assert run(stream, list(range(len(stream))), max_event_bytes=limit) == whole
    orjson.dumps(whole)


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=20), st.integers(1, 200))
def test_never_raises_on_garbage(chunks: list[bytes], limit: int) -> None:
    parser = SSEParser(max_event_bytes=limit)
    for chunk in chunks:
        parser.feed(chunk)
        assert len(parser._buf) <= limit
    parser.close()
    summary = parser.summary()
    # feed() and close() turn any exception into an "internal error: …" entry: none may have been caught
    assert not [e for e in summary["errors"] if "internal error" in e], summary["errors"]
    assert summary["bytes"] == sum(map(len, chunks))
    assert len(summary["errors"]) <= 20
    orjson.dumps(summary)
