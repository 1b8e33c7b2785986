"""The request body: read within a size limit as it arrives, gunzipped within the same
limit, decoded as JSON within a nesting limit. Problems refuse the whole request."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from shared.events import MAX_EVENTS_PER_REQUEST

# Events are at most: array → event → properties → object → list; more is never valid,
# and bounding it keeps every walk over a document cheap.
MAX_JSON_DEPTH = 16
# Concatenated gzip members are legal (one per flushed chunk); thousands are only an attack.
MAX_GZIP_MEMBERS = 64


class Rejection(Exception):
    """The request as a whole is refused: nothing of it is published."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _too_large(limit: int) -> Rejection:
    return Rejection(413, "payload_too_large", f"the request body is over {limit} bytes")


async def read_body(
    chunks: AsyncIterator[bytes],
    *,
    content_length: str | None,
    content_encoding: str | None,
    limit: int,
) -> bytes:
    """The (decompressed) body, refused with 413 as soon as it passes `limit` bytes.

    The declared length is checked before reading anything; the bytes on the wire are
    counted as they arrive, so an endless or huge body is cut off after `limit` bytes.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in {"identity", "gzip", "x-gzip"}:
        raise Rejection(415, "unsupported_encoding", f"Content-Encoding {encoding} is not accepted")
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise _too_large(limit)
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > limit:
            raise _too_large(limit)
    if encoding == "identity":
        return bytes(received)
    return gunzip(bytes(received), limit)


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (one or more members), never producing more than `limit` bytes.

    Each member costs a fresh inflater: 26,214 empty members in a 512 KiB body took 0.4 s
    of event-loop CPU, so a body may hold at most MAX_GZIP_MEMBERS of them."""
    out = bytearray()
    for _ in range(MAX_GZIP_MEMBERS):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            # Asking for one byte more than allowed tells "exactly at the limit" from "over".
            out += inflater.decompress(data, limit - len(out) + 1)
        except zlib.error as exc:
            raise Rejection(400, "bad_encoding", f"the body is not valid gzip: {exc}") from exc
        if len(out) > limit:
            raise Rejection(
                413, "payload_too_large", f"the decompressed body is over {limit} bytes"
            )
        if not inflater.eof:
            raise Rejection(400, "bad_encoding", "the gzip body is truncated")
        data = inflater.unused_data
        if not data.strip(b"\x00"):
            return bytes(out)
    raise Rejection(
        400, "bad_encoding", f"the body holds more than {MAX_GZIP_MEMBERS} gzip members"
    )


def loads(data: bytes, where: str = "body") -> Any:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "bad_json", f"{where} is not valid JSON: {exc}") from exc
    # Fewer brackets than the limit cannot nest deeper: most single events skip the walk.
    if data.count(b"{") + data.count(b"[") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise Rejection(400, "bad_json", f"{where} nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of containers, level by level, without recursion."""
    depth = 0
    level = [value] if isinstance(value, dict | list) else []
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            break
        below = []
        for container in level:
            for child in container.values() if isinstance(container, dict) else container:
                if isinstance(child, dict | list):
                    below.append(child)
        level = below
    return depth


def check_count(count: int) -> None:
    if count > MAX_EVENTS_PER_REQUEST:
        raise Rejection(
            413,
            "too_many_events",
            f"{count} events in one request, more than the limit of {MAX_EVENTS_PER_REQUEST}",
        )
