"""What one HTTP client may cost either service: head size, slow heads and bodies, and an
oversized body that reaches even a write-everything-first client as 413."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.security.conftest import LIMITS, Port

pytestmark = [pytest.mark.integration, pytest.mark.security]


def _address(port: Port) -> tuple[str, int]:
    url = urlsplit(port.url)
    assert url.hostname is not None
    assert url.port is not None
    return url.hostname, url.port


def _head(port: Port, *, length: int, extra: str = "") -> bytes:
    lines = [f"POST {port.post_path} HTTP/1.1", "Host: pacekeeper"]
    lines += [f"{name}: {value}" for name, value in port.headers.items()]
    lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return answer


def test_a_head_over_the_limit_gets_431_without_being_read(port: Port) -> None:
    """A probe sent 16 MiB of headers and both ports read them whole."""
    big = f"X-Padding: {'a' * 16 * 1024 * 1024}\r\n"
    sent = 0
    with socket.create_connection(_address(port)) as sock:
        data = _head(port, length=2, extra=big)
        try:
            while sent < len(data):
                sent += sock.send(data[sent : sent + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_answer(sock, 5)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"headers are over" in answer
    assert sent < len(data) // 2, "the server kept reading a head far past its limit"


def _drip(sock: socket.socket, data: bytes, *, step: int, interval: float) -> bytes | None:
    """Send `step` bytes every `interval` seconds; the server's answer as soon as one comes,
    or None if all of `data` went through unanswered."""
    sock.settimeout(interval)
    for i in range(0, len(data), step):
        try:
            sock.send(data[i : i + step])
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return _read_answer(sock, 5)
        if answer:
            return answer + _read_answer(sock, 5)
    return None


def test_a_head_sent_byte_by_byte_is_cut_off(port: Port) -> None:
    with socket.create_connection(_address(port)) as sock:
        answer = _drip(sock, _head(port, length=2) + b"{}", step=1, interval=0.25)
    assert answer is not None, "the whole head went through, one byte every 0.25 s"
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


def test_a_body_at_10_bytes_per_second_is_cut_off(port: Port) -> None:
    body = b" " * 1000 + b"{}"
    with socket.create_connection(_address(port)) as sock:
        sock.sendall(_head(port, length=len(body)))
        answer = _drip(sock, body, step=10, interval=1.0)
    assert answer is not None, "a body at 10 bytes/s was read to its end"
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


@pytest.mark.parametrize("megabytes", [1, 5, 50])
def test_an_oversized_body_reaches_urllib_as_413(port: Port, megabytes: int) -> None:
    """urllib writes the whole body before it reads the answer: without a lingering close
    the server's early 413 and close turn into a reset, and the client sees a broken pipe."""
    request = urllib.request.Request(
        port.url + port.post_path,
        data=b" " * (megabytes * 1024 * 1024),
        headers={**port.headers, "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert b"over" in refused.value.read()


def _valid_body(port: Port) -> bytes:
    if port.name == "ingest":
        return orjson.dumps(
            {
                "id": uuid.uuid4().hex,
                "type": "order_completed",
                "time": datetime.now(UTC).isoformat(),
                "user_id": "u-1",
            }
        )
    return orjson.dumps({"name": f"k{uuid.uuid4().hex[:12]}", "kind": "count", "event": "x"})


async def test_200_slow_clients_do_not_stop_others(port: Port) -> None:
    """200 clients drip heads and bodies while others are served; every slow one is cut
    off with 408 once its deadline passes, and every normal request succeeds."""
    host, tcp_port = _address(port)

    async def slow_client(n: int) -> bytes:
        reader, writer = await asyncio.open_connection(host, tcp_port)
        data = _head(port, length=100) + b" " * 100
        if n % 2:  # half finish the head at once and drip the body
            cut = data.index(b"\r\n\r\n") + 4
            writer.write(data[:cut])
            data = data[cut:]
        try:
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
                try:
                    return await asyncio.wait_for(reader.read(65536), 0.5)
                except TimeoutError:
                    continue
            return b"finished"
        except ConnectionError:
            return b"reset"
        finally:
            writer.close()

    slow = [asyncio.create_task(slow_client(n)) for n in range(200)]
    await asyncio.sleep(0.5)  # all connected and dripping
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=port.url, headers=port.headers, timeout=30) as http:
        for _ in range(200):
            started = time.perf_counter()
            response = await http.post(
                port.post_path,
                content=_valid_body(port),
                headers={"Content-Type": "application/json"},
            )
            latencies.append(time.perf_counter() - started)
            assert response.status_code in (201, 202), response.text
    answers = await asyncio.gather(*slow)
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), {
        answer[:40] for answer in answers
    }
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(
        f"{port.name}: 200 normal requests beside 200 slow clients: "
        f"p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
        f"(slow clients cut after {LIMITS.header_timeout:g}/{LIMITS.body_timeout:g} s)"
    )
