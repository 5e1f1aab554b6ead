"""The wire codec: one package that the agent and the receiver both import, so the two cannot drift.

Its modules, from the bottom up (each imports only those above it, :mod:`agent.errors` and protobuf):

- :mod:`.values`: the value model (signal specs, schema, chunk ids, chunks of raw values)
- :mod:`.predictors`: the predictors, in integers, and how a column's coding is named
- :mod:`.quantizer`: one column of one chunk, closed-loop, with its error bound
- :mod:`.chunks`: a sealed chunk's message and the schema: what the agent's buffer stores
- :mod:`.packed_columns` and :mod:`.packed`: a batch's chunks laid out signal by signal
- :mod:`.messages`: what travels over MQTT: the envelope around a batch, an ack or a status
- ``telemetry_pb2``: generated from ``proto/telemetry.proto`` (``make proto``)

It imports nothing of the agent's stages or of the receiver (``tests/test_layout.py`` enforces it); its
only outside imports are protobuf, zstandard and the product's error tree, :mod:`agent.errors`, a leaf.

Pure functions, no threads, no I/O: every call may run on any thread, and the caller owns its data.
The public API is re-exported here, so callers write ``from agent import wire`` and
``wire.encode_batch(...)``; the value model is imported from :mod:`agent.wire.values`.
"""

from agent.wire.chunks import MAX_CHUNK_SAMPLES, encode_chunk, schema_bytes, schema_from_bytes
from agent.wire.messages import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    MAX_BODY_BYTES,
    WIRE_VERSION,
    DecodedBatch,
    ack_noted,
    ack_schemas,
    chunk_ranges,
    decode_ack,
    decode_batch,
    decode_status,
    encode_ack,
    encode_batch,
    encode_status,
    schema_hash,
)

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "MAX_BODY_BYTES",
    "MAX_CHUNK_SAMPLES",
    "WIRE_VERSION",
    "DecodedBatch",
    "ack_noted",
    "ack_schemas",
    "chunk_ranges",
    "decode_ack",
    "decode_batch",
    "decode_status",
    "encode_ack",
    "encode_batch",
    "encode_chunk",
    "encode_status",
    "schema_bytes",
    "schema_from_bytes",
    "schema_hash",
]
