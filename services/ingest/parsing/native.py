"""Our own shape: one event, a JSON array of events, or NDJSON."""

from __future__ import annotations

from services.ingest.parsing.body import check_count, loads
from services.ingest.parsing.candidates import Candidate


def parse_events(body: bytes) -> list[Candidate]:
    document = loads(body)
    items = document if isinstance(document, list) else [document]
    check_count(len(items))
    return [Candidate(item) for item in items]


def parse_ndjson(body: bytes) -> list[Candidate]:
    lines = [(n, line) for n, line in enumerate(body.split(b"\n"), start=1) if line.strip()]
    check_count(len(lines))
    return [Candidate(loads(line, f"line {number}")) for number, line in lines]
