"""The wire codec: one package that the agent and the receiver both import, so the two cannot drift.

It holds the value model (:mod:`.values`), the predictors (:mod:`.predictors`), the column quantizer with
its error bound (:mod:`.quantizer`), the chunk layout (:mod:`.chunks`), the packed batch layout
(:mod:`.packed`) and the messages in their envelope: batch, ack, status (:mod:`.messages`). It imports
nothing of the agent's stages or of the receiver (``tests/test_layout.py`` enforces it); its only outside
import is the product's error tree, :mod:`agent.errors`, a leaf module.

Pure functions, no threads, no I/O: every call may run on any thread. The public API is re-exported
here, so callers write ``from agent import wire`` and ``wire.encode_batch(...)``.
"""

from agent.wire.messages import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    MAX_BODY_BYTES,
    MAX_CHUNK_SAMPLES,
    WIRE_VERSION,
    DecodedBatch,
    ack_noted,
    chunk_ranges,
    decode_ack,
    decode_batch,
    decode_status,
    encode_ack,
    encode_batch,
    encode_chunk,
    encode_status,
    schema_bytes,
    schema_from_bytes,
)

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "MAX_BODY_BYTES",
    "MAX_CHUNK_SAMPLES",
    "WIRE_VERSION",
    "DecodedBatch",
    "ack_noted",
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
]
