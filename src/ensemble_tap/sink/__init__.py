"""The ClickHouse sink: every event of the stream into one ClickHouse table, once.

``service`` composes the parts: ``jetstream`` (the durable pull consumer on a connection of
its own), ``consumer`` (batching, insert, ack, DLQ), ``rows`` (message → row), ``schema``
(the table and its bootstrap), ``backends`` (chdb or a server over HTTP) and ``search``
(finding stored events).
"""

from ensemble_tap.sink.backends import Backend, BackendError, EmbeddedBackend, ServerBackend
from ensemble_tap.sink.search import EventFilters, InvalidSearch, search_events
from ensemble_tap.sink.service import ClickHouseSink

__all__ = [
    "Backend",
    "BackendError",
    "ClickHouseSink",
    "EmbeddedBackend",
    "EventFilters",
    "InvalidSearch",
    "ServerBackend",
    "search_events",
]
