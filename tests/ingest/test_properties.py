"""Property: no body, however odd, makes ingest answer 500 (or any 5xx)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

ROUTES = ["/v1/events", "/v1/batch", "/v1/track", "/v1/page", "/v1/identify"]
CONTENT_TYPES = [
    "application/json",
    "application/x-ndjson",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/plain",
    "application/octet-stream",
]
EXPECTED = {202, 400, 405, 413, 415, 422}

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)
times = (
    st.sampled_from(["2026-11-27T10:00:00Z", "yesterday", "2026-13-45", "", "1e309"]) | st.text()
)
FIELDS = {
    "id": st.text() | json_values,
    "messageId": st.text() | st.integers(),
    "type": st.sampled_from(["track", "page", "identify", "order_completed"]) | json_values,
    "event": json_values,
    "specversion": st.sampled_from(["1.0", "0.3", ""]) | json_values,
    "source": json_values,
    "name": json_values,
    "groupId": json_values,
    "previousId": json_values,
    "datacontenttype": st.sampled_from(["application/json", "text/plain"]) | json_values,
    "time": times,
    "timestamp": times,
    "user_id": st.text() | json_values,
    "userId": json_values,
    "properties": json_values,
    "traits": json_values,
    "data": json_values,
    "data_base64": st.text(),
}
eventish = st.fixed_dictionaries({}, optional=FIELDS)
segment_batches = st.fixed_dictionaries(
    {"batch": st.lists(eventish | json_values, max_size=4)}, optional={"sentAt": times}
)
documents = json_values | eventish | st.lists(eventish, max_size=5) | segment_batches


def _encode(document: Any, ndjson: bool) -> bytes:
    if ndjson and isinstance(document, list):
        return "\n".join(json.dumps(item) for item in document).encode()
    return json.dumps(document).encode()  # stdlib: also writes integers past 64 bits


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    document=documents,
    raw=st.none() | st.binary(max_size=200),
    route=st.sampled_from(ROUTES),
    content_type=st.sampled_from(CONTENT_TYPES),
    zipped=st.booleans(),
)
async def test_arbitrary_bodies_never_get_a_server_error(
    client: httpx.AsyncClient,
    document: Any,
    raw: bytes | None,
    route: str,
    content_type: str,
    zipped: bool,
) -> None:
    body = raw if raw is not None else _encode(document, content_type.endswith("ndjson"))
    headers = {"Content-Type": content_type}
    if zipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    response = await client.post(route, content=body, headers=headers)
    assert response.status_code in EXPECTED, (response.status_code, response.text)
    assert "code" in response.json() or response.status_code == 202
