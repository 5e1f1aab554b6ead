from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_NONE: _ClassVar[Compression]
    COMPRESSION_ZLIB: _ClassVar[Compression]
    COMPRESSION_ZSTD: _ClassVar[Compression]

class BodyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BODY_KIND_UNSPECIFIED: _ClassVar[BodyKind]
    BODY_KIND_BATCH: _ClassVar[BodyKind]
    BODY_KIND_ACK: _ClassVar[BodyKind]
    BODY_KIND_STATUS: _ClassVar[BodyKind]

class ValueKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_KIND_INTEGER: _ClassVar[ValueKind]
    VALUE_KIND_FLOAT: _ClassVar[ValueKind]

class Predictor(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREDICTOR_HOLD: _ClassVar[Predictor]
    PREDICTOR_LINEAR: _ClassVar[Predictor]
    PREDICTOR_SMOOTHING: _ClassVar[Predictor]
    PREDICTOR_SWING: _ClassVar[Predictor]
COMPRESSION_NONE: Compression
COMPRESSION_ZLIB: Compression
COMPRESSION_ZSTD: Compression
BODY_KIND_UNSPECIFIED: BodyKind
BODY_KIND_BATCH: BodyKind
BODY_KIND_ACK: BodyKind
BODY_KIND_STATUS: BodyKind
VALUE_KIND_INTEGER: ValueKind
VALUE_KIND_FLOAT: ValueKind
PREDICTOR_HOLD: Predictor
PREDICTOR_LINEAR: Predictor
PREDICTOR_SMOOTHING: Predictor
PREDICTOR_SWING: Predictor

class Envelope(_message.Message):
    __slots__ = ("version", "kind", "compression", "body")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    version: int
    kind: BodyKind
    compression: Compression
    body: bytes
    def __init__(self, version: _Optional[int] = ..., kind: _Optional[_Union[BodyKind, str]] = ..., compression: _Optional[_Union[Compression, str]] = ..., body: _Optional[bytes] = ...) -> None: ...

class SignalDef(_message.Message):
    __slots__ = ("name", "scale", "offset", "kind", "integer_scaled", "bound_raw", "predictor", "angle_period", "angle_low")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INTEGER_SCALED_FIELD_NUMBER: _ClassVar[int]
    BOUND_RAW_FIELD_NUMBER: _ClassVar[int]
    PREDICTOR_FIELD_NUMBER: _ClassVar[int]
    ANGLE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    ANGLE_LOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    scale: float
    offset: float
    kind: ValueKind
    integer_scaled: bool
    bound_raw: int
    predictor: Predictor
    angle_period: int
    angle_low: int
    def __init__(self, name: _Optional[str] = ..., scale: _Optional[float] = ..., offset: _Optional[float] = ..., kind: _Optional[_Union[ValueKind, str]] = ..., integer_scaled: _Optional[bool] = ..., bound_raw: _Optional[int] = ..., predictor: _Optional[_Union[Predictor, str]] = ..., angle_period: _Optional[int] = ..., angle_low: _Optional[int] = ...) -> None: ...

class Schema(_message.Message):
    __slots__ = ("rate_num", "rate_den", "signals")
    RATE_NUM_FIELD_NUMBER: _ClassVar[int]
    RATE_DEN_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    rate_num: int
    rate_den: int
    signals: _containers.RepeatedCompositeFieldContainer[SignalDef]
    def __init__(self, rate_num: _Optional[int] = ..., rate_den: _Optional[int] = ..., signals: _Optional[_Iterable[_Union[SignalDef, _Mapping]]] = ...) -> None: ...

class Column(_message.Message):
    __slots__ = ("presence_runs", "residuals", "floats", "exact_gaps", "exact", "exact_unsigned", "signal")
    PRESENCE_RUNS_FIELD_NUMBER: _ClassVar[int]
    RESIDUALS_FIELD_NUMBER: _ClassVar[int]
    FLOATS_FIELD_NUMBER: _ClassVar[int]
    EXACT_GAPS_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    EXACT_UNSIGNED_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    presence_runs: _containers.RepeatedScalarFieldContainer[int]
    residuals: _containers.RepeatedScalarFieldContainer[int]
    floats: _containers.RepeatedScalarFieldContainer[float]
    exact_gaps: _containers.RepeatedScalarFieldContainer[int]
    exact: _containers.RepeatedScalarFieldContainer[int]
    exact_unsigned: _containers.RepeatedScalarFieldContainer[int]
    signal: int
    def __init__(self, presence_runs: _Optional[_Iterable[int]] = ..., residuals: _Optional[_Iterable[int]] = ..., floats: _Optional[_Iterable[float]] = ..., exact_gaps: _Optional[_Iterable[int]] = ..., exact: _Optional[_Iterable[int]] = ..., exact_unsigned: _Optional[_Iterable[int]] = ..., signal: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("boot_id", "seq", "first_tick", "sample_count", "tick_dod", "residuals", "residual_counts", "extras")
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_TICK_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TICK_DOD_FIELD_NUMBER: _ClassVar[int]
    RESIDUALS_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    boot_id: bytes
    seq: int
    first_tick: int
    sample_count: int
    tick_dod: _containers.RepeatedScalarFieldContainer[int]
    residuals: _containers.RepeatedScalarFieldContainer[int]
    residual_counts: _containers.RepeatedScalarFieldContainer[int]
    extras: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, boot_id: _Optional[bytes] = ..., seq: _Optional[int] = ..., first_tick: _Optional[int] = ..., sample_count: _Optional[int] = ..., tick_dod: _Optional[_Iterable[int]] = ..., residuals: _Optional[_Iterable[int]] = ..., residual_counts: _Optional[_Iterable[int]] = ..., extras: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...

class ChunkRange(_message.Message):
    __slots__ = ("boot_id", "first_seq", "last_seq")
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    boot_id: bytes
    first_seq: int
    last_seq: int
    def __init__(self, boot_id: _Optional[bytes] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ...) -> None: ...

class Packed(_message.Message):
    __slots__ = ("boot_id", "seq", "first_tick", "sample_count", "tick_dod_count", "tick_dod", "columns")
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_TICK_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TICK_DOD_COUNT_FIELD_NUMBER: _ClassVar[int]
    TICK_DOD_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    boot_id: _containers.RepeatedScalarFieldContainer[bytes]
    seq: _containers.RepeatedScalarFieldContainer[int]
    first_tick: _containers.RepeatedScalarFieldContainer[int]
    sample_count: _containers.RepeatedScalarFieldContainer[int]
    tick_dod_count: _containers.RepeatedScalarFieldContainer[int]
    tick_dod: _containers.RepeatedScalarFieldContainer[int]
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    def __init__(self, boot_id: _Optional[_Iterable[bytes]] = ..., seq: _Optional[_Iterable[int]] = ..., first_tick: _Optional[_Iterable[int]] = ..., sample_count: _Optional[_Iterable[int]] = ..., tick_dod_count: _Optional[_Iterable[int]] = ..., tick_dod: _Optional[_Iterable[int]] = ..., columns: _Optional[_Iterable[_Union[Column, _Mapping]]] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("vin", "schema", "chunks", "evicted", "sent_at", "packed")
    VIN_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    vin: str
    schema: Schema
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    evicted: _containers.RepeatedCompositeFieldContainer[ChunkRange]
    sent_at: float
    packed: Packed
    def __init__(self, vin: _Optional[str] = ..., schema: _Optional[_Union[Schema, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ..., evicted: _Optional[_Iterable[_Union[ChunkRange, _Mapping]]] = ..., sent_at: _Optional[float] = ..., packed: _Optional[_Union[Packed, _Mapping]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("vin", "stored", "noted")
    VIN_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    NOTED_FIELD_NUMBER: _ClassVar[int]
    vin: str
    stored: _containers.RepeatedCompositeFieldContainer[ChunkRange]
    noted: _containers.RepeatedCompositeFieldContainer[ChunkRange]
    def __init__(self, vin: _Optional[str] = ..., stored: _Optional[_Iterable[_Union[ChunkRange, _Mapping]]] = ..., noted: _Optional[_Iterable[_Union[ChunkRange, _Mapping]]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("vin", "state", "backlog_chunks", "backlog_samples", "backlog_bytes", "oldest_age_s", "last_ack_at", "dropped_chunks", "agent_version", "updated_at")
    VIN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    OLDEST_AGE_S_FIELD_NUMBER: _ClassVar[int]
    LAST_ACK_AT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    vin: str
    state: str
    backlog_chunks: int
    backlog_samples: int
    backlog_bytes: int
    oldest_age_s: float
    last_ack_at: float
    dropped_chunks: int
    agent_version: str
    updated_at: float
    def __init__(self, vin: _Optional[str] = ..., state: _Optional[str] = ..., backlog_chunks: _Optional[int] = ..., backlog_samples: _Optional[int] = ..., backlog_bytes: _Optional[int] = ..., oldest_age_s: _Optional[float] = ..., last_ack_at: _Optional[float] = ..., dropped_chunks: _Optional[int] = ..., agent_version: _Optional[str] = ..., updated_at: _Optional[float] = ...) -> None: ...
