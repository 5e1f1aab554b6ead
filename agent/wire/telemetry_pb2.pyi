from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper

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
    __slots__ = ("body", "compression", "kind", "mac", "version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    version: int
    kind: BodyKind
    compression: Compression
    body: bytes
    mac: bytes
    def __init__(
        self,
        version: int | None = ...,
        kind: BodyKind | str | None = ...,
        compression: Compression | str | None = ...,
        body: bytes | None = ...,
        mac: bytes | None = ...,
    ) -> None: ...

class SignalDef(_message.Message):
    __slots__ = (
        "angle_low",
        "angle_period",
        "bound_raw",
        "integer_scaled",
        "kind",
        "name",
        "offset",
        "predictor",
        "scale",
    )
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
    def __init__(
        self,
        name: str | None = ...,
        scale: float | None = ...,
        offset: float | None = ...,
        kind: ValueKind | str | None = ...,
        integer_scaled: bool | None = ...,
        bound_raw: int | None = ...,
        predictor: Predictor | str | None = ...,
        angle_period: int | None = ...,
        angle_low: int | None = ...,
    ) -> None: ...

class Schema(_message.Message):
    __slots__ = ("rate_den", "rate_num", "signals")
    RATE_NUM_FIELD_NUMBER: _ClassVar[int]
    RATE_DEN_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    rate_num: int
    rate_den: int
    signals: _containers.RepeatedCompositeFieldContainer[SignalDef]
    def __init__(
        self,
        rate_num: int | None = ...,
        rate_den: int | None = ...,
        signals: _Iterable[SignalDef | _Mapping] | None = ...,
    ) -> None: ...

class Column(_message.Message):
    __slots__ = ("exact", "exact_gaps", "exact_unsigned", "floats", "presence_runs", "residuals", "signal")
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
    def __init__(
        self,
        presence_runs: _Iterable[int] | None = ...,
        residuals: _Iterable[int] | None = ...,
        floats: _Iterable[float] | None = ...,
        exact_gaps: _Iterable[int] | None = ...,
        exact: _Iterable[int] | None = ...,
        exact_unsigned: _Iterable[int] | None = ...,
        signal: int | None = ...,
    ) -> None: ...

class Chunk(_message.Message):
    __slots__ = (
        "boot_id",
        "extras",
        "first_tick",
        "residual_counts",
        "residuals",
        "sample_count",
        "sealed_at_ms",
        "seq",
        "tick_dod",
    )
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_TICK_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TICK_DOD_FIELD_NUMBER: _ClassVar[int]
    RESIDUALS_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    SEALED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    boot_id: bytes
    seq: int
    first_tick: int
    sample_count: int
    tick_dod: _containers.RepeatedScalarFieldContainer[int]
    residuals: _containers.RepeatedScalarFieldContainer[int]
    residual_counts: _containers.RepeatedScalarFieldContainer[int]
    extras: _containers.RepeatedCompositeFieldContainer[Column]
    sealed_at_ms: int
    def __init__(
        self,
        boot_id: bytes | None = ...,
        seq: int | None = ...,
        first_tick: int | None = ...,
        sample_count: int | None = ...,
        tick_dod: _Iterable[int] | None = ...,
        residuals: _Iterable[int] | None = ...,
        residual_counts: _Iterable[int] | None = ...,
        extras: _Iterable[Column | _Mapping] | None = ...,
        sealed_at_ms: int | None = ...,
    ) -> None: ...

class ChunkRange(_message.Message):
    __slots__ = ("boot_id", "first_seq", "last_seq")
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    boot_id: bytes
    first_seq: int
    last_seq: int
    def __init__(
        self, boot_id: bytes | None = ..., first_seq: int | None = ..., last_seq: int | None = ...
    ) -> None: ...

class Packed(_message.Message):
    __slots__ = (
        "boot_id",
        "columns",
        "first_tick",
        "sample_count",
        "sealed_at_ms",
        "seq",
        "sparse",
        "tick_dod",
        "tick_dod_count",
    )
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_TICK_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TICK_DOD_COUNT_FIELD_NUMBER: _ClassVar[int]
    TICK_DOD_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    SEALED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    boot_id: _containers.RepeatedScalarFieldContainer[bytes]
    seq: _containers.RepeatedScalarFieldContainer[int]
    first_tick: _containers.RepeatedScalarFieldContainer[int]
    sample_count: _containers.RepeatedScalarFieldContainer[int]
    tick_dod_count: _containers.RepeatedScalarFieldContainer[int]
    tick_dod: _containers.RepeatedScalarFieldContainer[int]
    columns: _containers.RepeatedCompositeFieldContainer[Column]
    sealed_at_ms: _containers.RepeatedScalarFieldContainer[int]
    sparse: SparseResiduals
    def __init__(
        self,
        boot_id: _Iterable[bytes] | None = ...,
        seq: _Iterable[int] | None = ...,
        first_tick: _Iterable[int] | None = ...,
        sample_count: _Iterable[int] | None = ...,
        tick_dod_count: _Iterable[int] | None = ...,
        tick_dod: _Iterable[int] | None = ...,
        columns: _Iterable[Column | _Mapping] | None = ...,
        sealed_at_ms: _Iterable[int] | None = ...,
        sparse: SparseResiduals | _Mapping | None = ...,
    ) -> None: ...

class SparseResiduals(_message.Message):
    __slots__ = ("gaps", "nonzero", "values")
    NONZERO_FIELD_NUMBER: _ClassVar[int]
    GAPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    nonzero: _containers.RepeatedScalarFieldContainer[int]
    gaps: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(
        self,
        nonzero: _Iterable[int] | None = ...,
        gaps: _Iterable[int] | None = ...,
        values: _Iterable[int] | None = ...,
    ) -> None: ...

class Batch(_message.Message):
    __slots__ = ("backlog_chunks", "chunks", "evicted", "packed", "schema", "schema_hash", "sent_at", "vin")
    VIN_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_HASH_FIELD_NUMBER: _ClassVar[int]
    vin: str
    schema: Schema
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    evicted: _containers.RepeatedCompositeFieldContainer[ChunkRange]
    sent_at: float
    packed: Packed
    backlog_chunks: int
    schema_hash: bytes
    def __init__(
        self,
        vin: str | None = ...,
        schema: Schema | _Mapping | None = ...,
        chunks: _Iterable[Chunk | _Mapping] | None = ...,
        evicted: _Iterable[ChunkRange | _Mapping] | None = ...,
        sent_at: float | None = ...,
        packed: Packed | _Mapping | None = ...,
        backlog_chunks: int | None = ...,
        schema_hash: bytes | None = ...,
    ) -> None: ...

class Ack(_message.Message):
    __slots__ = ("noted", "schema_needed", "schema_stored", "stored", "vin")
    VIN_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    NOTED_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_NEEDED_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_STORED_FIELD_NUMBER: _ClassVar[int]
    vin: str
    stored: _containers.RepeatedCompositeFieldContainer[ChunkRange]
    noted: _containers.RepeatedCompositeFieldContainer[ChunkRange]
    schema_needed: bytes
    schema_stored: bytes
    def __init__(
        self,
        vin: str | None = ...,
        stored: _Iterable[ChunkRange | _Mapping] | None = ...,
        noted: _Iterable[ChunkRange | _Mapping] | None = ...,
        schema_needed: bytes | None = ...,
        schema_stored: bytes | None = ...,
    ) -> None: ...

class Status(_message.Message):
    __slots__ = (
        "agent_version",
        "backlog_bytes",
        "backlog_chunks",
        "backlog_samples",
        "budget_coarsened",
        "buses",
        "drain_eta_known",
        "drain_eta_s",
        "dropped_chunks",
        "last_ack_at",
        "latest",
        "month_bytes",
        "month_projected_bytes",
        "monthly_budget_bytes",
        "oldest_age_s",
        "state",
        "updated_at",
        "vin",
    )
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
    DRAIN_ETA_S_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    DRAIN_ETA_KNOWN_FIELD_NUMBER: _ClassVar[int]
    MONTH_BYTES_FIELD_NUMBER: _ClassVar[int]
    MONTH_PROJECTED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUSES_FIELD_NUMBER: _ClassVar[int]
    BUDGET_COARSENED_FIELD_NUMBER: _ClassVar[int]
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
    drain_eta_s: float
    latest: _containers.RepeatedCompositeFieldContainer[LatestValue]
    drain_eta_known: bool
    month_bytes: int
    month_projected_bytes: int
    monthly_budget_bytes: int
    buses: _containers.RepeatedCompositeFieldContainer[BusHealth]
    budget_coarsened: bool
    def __init__(
        self,
        vin: str | None = ...,
        state: str | None = ...,
        backlog_chunks: int | None = ...,
        backlog_samples: int | None = ...,
        backlog_bytes: int | None = ...,
        oldest_age_s: float | None = ...,
        last_ack_at: float | None = ...,
        dropped_chunks: int | None = ...,
        agent_version: str | None = ...,
        updated_at: float | None = ...,
        drain_eta_s: float | None = ...,
        latest: _Iterable[LatestValue | _Mapping] | None = ...,
        drain_eta_known: bool | None = ...,
        month_bytes: int | None = ...,
        month_projected_bytes: int | None = ...,
        monthly_budget_bytes: int | None = ...,
        buses: _Iterable[BusHealth | _Mapping] | None = ...,
        budget_coarsened: bool | None = ...,
    ) -> None: ...

class BusHealth(_message.Message):
    __slots__ = (
        "bus_errors",
        "bus_off",
        "channel",
        "controller_overflows",
        "error_frames",
        "kernel_dropped",
        "receive_buffer_bytes",
        "state",
    )
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_DROPPED_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_OVERFLOWS_FIELD_NUMBER: _ClassVar[int]
    BUS_ERRORS_FIELD_NUMBER: _ClassVar[int]
    BUS_OFF_FIELD_NUMBER: _ClassVar[int]
    ERROR_FRAMES_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_BUFFER_BYTES_FIELD_NUMBER: _ClassVar[int]
    channel: str
    state: str
    kernel_dropped: int
    controller_overflows: int
    bus_errors: int
    bus_off: int
    error_frames: int
    receive_buffer_bytes: int
    def __init__(
        self,
        channel: str | None = ...,
        state: str | None = ...,
        kernel_dropped: int | None = ...,
        controller_overflows: int | None = ...,
        bus_errors: int | None = ...,
        bus_off: int | None = ...,
        error_frames: int | None = ...,
        receive_buffer_bytes: int | None = ...,
    ) -> None: ...

class LatestValue(_message.Message):
    __slots__ = ("at", "name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    at: float
    def __init__(self, name: str | None = ..., value: float | None = ..., at: float | None = ...) -> None: ...
