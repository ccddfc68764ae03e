"""Bounded bodies: decompression with a cap (every encoding), and the tap that hashes streamed bodies."""
import gzip
import hashlib
import zlib

import brotli
import pytest

from receipts.addon import bodies

try:
    from compression import zstd
except ImportError:
    from backports import zstd

TEXT = b'{"id": "x", "usage": {"prompt_tokens": 1, "completion_tokens": 2}}'


def deflate(data: bytes) -> bytes:
    return zlib.compress(data)


@pytest.mark.parametrize("encoding, encode", [("gzip", gzip.compress), ("deflate", deflate),
                                              ("br", brotli.compress), ("zstd", zstd.compress)])
def test_each_encoding_is_undone_and_a_bomb_stops_at_the_limit(encoding, encode):
    assert bodies.decode(encode(TEXT), encoding) == (TEXT, None)
    bomb = encode(bytes(8 << 20))
    body, error = bodies.decode(bomb, encoding, limit=1 << 20)
    assert error == "body_too_large" and body == bomb, "past the limit the body is the bytes as sent"
    assert bodies.decode(encode(bytes(1 << 20)), encoding, limit=1 << 20) == (bytes(1 << 20), None), "up to it, decoded"


def test_chained_unknown_and_broken_encodings():
    assert bodies.decode(brotli.compress(gzip.compress(TEXT)), "gzip, br") == (TEXT, None)
    assert bodies.decode(TEXT, "identity") == (TEXT, None)
    assert bodies.decode(TEXT, "compress")[1].startswith("undecodable: compress")
    assert bodies.decode(b"\x1f\x8b garbage", "gzip")[1].startswith("undecodable: gzip")


def test_the_tap_passes_every_chunk_on_hashes_all_and_keeps_a_bounded_head():
    tap = bodies.Tap(keep=10)
    chunks = [b"0123456", b"789abcdef", b"", b"ghij"]
    assert [tap(c) for c in chunks] == chunks
    whole = b"".join(chunks)
    assert tap.record() == {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest(), "streamed": True}
    assert bytes(tap.head) == whole[:11] and not tap.complete


@pytest.mark.parametrize("size, limit, streams", [(None, 10, True), (-1, 10, True), (0, 10, False),
                                                  (10, 10, False), (11, 10, True)])
def test_what_streams(size, limit, streams):
    assert bodies.must_stream(size, limit) is streams
