"""From HTTP body to validated envelopes, one step per module: `body` (size-bounded reading,
gzip, JSON), `formats` (which format a Content-Type names), the mappings onto our event
shape (`native`, `segment`, `cloudevents`), and `candidates` (validation, with errors in
the client's own field names).

Everything here is pure except `read_body`, which only pulls chunks from the request.
A problem with the request as a whole raises `Rejection` (400/413/415); a problem with one
event becomes a `FieldError` naming its index.
"""

from services.ingest.parsing.body import MAX_GZIP_MEMBERS, Rejection, gunzip, read_body
from services.ingest.parsing.candidates import Candidate, validate
from services.ingest.parsing.cloudevents import (
    cloudevent_attributes,
    parse_cloudevent,
    parse_cloudevent_binary,
    parse_cloudevents_batch,
)
from services.ingest.parsing.formats import Format, events_format, segment_format
from services.ingest.parsing.native import parse_events, parse_ndjson
from services.ingest.parsing.segment import SEGMENT_CALLS, parse_segment, parse_segment_batch

__all__ = [
    "MAX_GZIP_MEMBERS",
    "SEGMENT_CALLS",
    "Candidate",
    "Format",
    "Rejection",
    "cloudevent_attributes",
    "events_format",
    "gunzip",
    "parse_cloudevent",
    "parse_cloudevent_binary",
    "parse_cloudevents_batch",
    "parse_events",
    "parse_ndjson",
    "parse_segment",
    "parse_segment_batch",
    "read_body",
    "segment_format",
    "validate",
]
