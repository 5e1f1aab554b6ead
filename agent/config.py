"""The agent's configuration: a YAML file read into frozen dataclasses (:class:`AgentConfig`).

Every key is documented in ``config/edge-agent.example.yaml``. The keys of each section are the fields of
its dataclass; a field without a default is a required key. Relative paths resolve against the config
file's directory. The ``mqtt`` and ``logging`` sections are shared with the receiver
(:mod:`receiver.config`). Configs can also be built in code: ``AgentConfig(vin=..., source=...,
buses=(...))`` (no validation happens then).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, NamedTuple

from agent.service.logs import LOGGING_SECTION, LoggingConfig
from agent.service.mqtt import MQTT_CHECKS, MQTT_FIELDS, MqttConfig
from agent.service.schema import (
    Alias,
    Boolean,
    Choice,
    FilePath,
    Float,
    Integer,
    ListOf,
    MapOf,
    Nullable,
    Section,
    SectionView,
    String,
    child,
    load_document,
    parse_document,
    suggest,
)
from agent.wire import predictors as predict

DEFAULT_AGENT_CONFIG = Path("/etc/edge-agent/config.yaml")
LOG_SUFFIXES = tuple(s + gz for s in (".log", ".asc", ".blf", ".csv", ".trc", ".mf4") for gz in ("", ".gz"))


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from: a recorded ``log`` replayed at ``speed`` (``math.inf`` = "max"), or buses."""

    kind: Literal["replay", "bus"]
    log: Path | None = None
    speed: float = 1.0

    @property
    def as_fast_as_possible(self) -> bool:
        return math.isinf(self.speed)


@dataclass(frozen=True)
class BusConfig:
    """One CAN bus: the log's channel name or the interface channel, and the DBC files that decode it.

    ``j1939``: ``True``/``False`` forces J1939 PGN matching on or off; ``None`` means "auto" (detect).
    ``receive_buffer_bytes``: a SocketCAN socket's receive buffer (:mod:`agent.bus`); 0: the kernel's.
    """

    channel: str
    dbc: tuple[Path, ...]
    interface: str = "socketcan"
    bitrate: int | None = None
    j1939: bool | None = None
    receive_buffer_bytes: int = 4 * 1024 * 1024


class BoundsPreset(NamedTuple):
    """Error bounds and angles (a whole turn) by ``MESSAGE.SIGNAL``, each in the signal's own unit."""

    bounds: Mapping[str, float]
    angles: Mapping[str, float]


MPH = 1.609344  # km/h
BOUNDS_PRESETS: Mapping[str, BoundsPreset] = {
    "none": BoundsPreset({}, {}),
    # Seed 001's thresholds on the reference car's signals: speed ±2 mph, power ±5 kW, state of charge
    # ±0.5 %, heading ±5° (an angle: 359.9° and 0.1° are 0.2° apart).
    "seeds": BoundsPreset(
        {
            "DriveSpeed.VehicleSpeed": 2 * MPH,
            "BatteryPower.PackPower": 5.0,
            "BatteryState.StateOfCharge": 0.5,
            "Navigation.Heading": 5.0,
        },
        {"Navigation.Heading": 360.0},
    ),
}


@dataclass(frozen=True)
class SamplingConfig:
    """What is sampled and how precisely it is sent.

    ``signals`` empty = every signal of every DBC. ``bounds`` maps ``MESSAGE.SIGNAL`` to an error bound
    in the signal's unit (0 = lossless); ``angles`` maps it to a whole turn (360 for degrees), so that its
    values wrap. ``bounds_preset`` names a :data:`BOUNDS_PRESETS` entry applied beneath them, to the
    signals it names that are sampled. ``predictor`` codes every signal (:mod:`agent.wire.predictors`).
    ``max_hold_s``: how long a value is held after its frame, at most; ``None`` ("auto") derives it per
    signal from its period (:mod:`agent.sample`). ``budget_bounds``: the coarsest bound the user allows
    each named signal while the month's link bytes are projected past ``upload.monthly_bytes``
    (:func:`budget_config`).
    """

    rate_hz: float = 50.0
    signals: tuple[str, ...] = ()
    bounds: Mapping[str, float] = field(default_factory=dict)
    bounds_preset: str = "none"
    angles: Mapping[str, float] = field(default_factory=dict)
    predictor: str = predict.DEFAULT
    max_hold_s: float | None = None
    budget_bounds: Mapping[str, float] = field(default_factory=dict)

    def bound(self, name: str) -> float:
        """The error bound of ``name`` (``MESSAGE.SIGNAL``): the configured one, the preset's, or 0."""
        return self.bounds.get(name, BOUNDS_PRESETS[self.bounds_preset].bounds.get(name, 0.0))

    def angle(self, name: str) -> float:
        """The whole turn of ``name`` if it is an angle (configured or from the preset), else 0."""
        return self.angles.get(name, BOUNDS_PRESETS[self.bounds_preset].angles.get(name, 0.0))


@dataclass(frozen=True)
class BufferConfig:
    """The ``buffer`` section, taken as is by the pipeline and the buffer's writer; ``max_bytes``,
    ``max_age_s`` and ``full_policy`` are the cap that :meth:`agent.buffer.Buffer.append` applies."""

    path: Path = Path("/var/lib/edge-agent/buffer.sqlite")
    commit_interval_s: float = 1.0
    max_bytes: int = 0  # 0 = no cap
    max_age_s: float = 0.0  # 0 = no age limit
    full_policy: Literal["drop_oldest", "refuse_new"] = "drop_oldest"


@dataclass(frozen=True)
class UploadConfig:
    """``compression``: of each batch, one of :data:`agent.wire.COMPRESSIONS` (the receiver reads all)."""

    max_inflight_batches: int = 8
    max_batch_bytes: int = 262144
    ack_timeout_s: float = 15.0
    compression: str = "zstd"
    max_bytes_per_s: float = 0.0  # 0 = no bandwidth cap
    batch_interval_s: float = 0.0  # online: a batch at most this often; 0 = a batch per commit
    monthly_bytes: int = 0  # the month's data budget on the link (agent.budget); 0 = none


MAX_STATUS_SIGNALS = 16  # the retained status stays a few hundred bytes


@dataclass(frozen=True)
class StatusConfig:
    """``signals``: sampled signals (``MESSAGE.SIGNAL``) whose latest value and time the retained MQTT
    status carries, so that a dashboard sees the vehicle's present while its backlog drains oldest
    first; empty (the default) = none. ``publish_interval_s``: that status at most this often while
    only its figures change (a change of state goes at once)."""

    signals: tuple[str, ...] = ()
    publish_interval_s: float = 1.0  # the retained MQTT status, while only its figures change


@dataclass(frozen=True)
class AgentConfig:
    """The whole agent config. ``mqtt.client_id`` defaults to ``edge-agent-<vin>``."""

    vin: str
    source: SourceConfig
    buses: tuple[BusConfig, ...]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    status: StatusConfig = field(default_factory=StatusConfig)

    def __post_init__(self) -> None:
        if self.mqtt.client_id is None:
            object.__setattr__(self, "mqtt", replace(self.mqtt, client_id=f"edge-agent-{self.vin}"))


def check_source(source: SourceConfig, view: SectionView) -> None:
    if source.kind == "replay" and source.log is None:
        view.error(None, "missing required key 'log' (required when kind is 'replay')")
    if source.kind == "bus" and source.log is not None:
        view.error("log", "is only used when kind is 'replay' (remove it, or set kind: replay)")


def check_sampling(sampling: SamplingConfig, view: SectionView) -> None:
    for name, coarsest in sampling.budget_bounds.items():
        if coarsest < sampling.bound(name):
            view.error(
                "budget_bounds",
                f"{coarsest:g} is finer than the signal's own bound {sampling.bound(name):g}: a budget "
                "only ever coarsens (give at least its bound)",
                node=child(view.given.get("budget_bounds"), name),
                sub=f"[{name!r}]",
            )
    if not sampling.signals:
        return
    for key, names in (
        ("bounds", sampling.bounds),
        ("angles", sampling.angles),
        ("budget_bounds", sampling.budget_bounds),
    ):
        for name in names:
            if name not in sampling.signals:
                node = child(view.given.get(key), name, key_node=True)
                hint = suggest(name, sampling.signals)
                view.error(
                    key, f"signal {name!r} is not in sampling.signals{hint}", node=node, sub=f"[{name!r}]"
                )


def check_budget_bounds(config: AgentConfig, view: SectionView) -> None:
    if config.sampling.budget_bounds and not config.upload.monthly_bytes:
        view.error(
            "sampling",
            "apply only while the month would overrun upload.monthly_bytes, which is not set: set it (or remove them)",
            node=child(view.given.get("sampling"), "budget_bounds"),
            sub=".budget_bounds",
        )


def budget_config(config: AgentConfig) -> AgentConfig | None:
    """The configuration the agent samples with while its month is projected over budget: each signal of
    ``sampling.budget_bounds`` at that bound (never coarser); ``None`` when none is given."""
    sampling = config.sampling
    if not sampling.budget_bounds:
        return None
    return replace(config, sampling=replace(sampling, bounds={**sampling.bounds, **sampling.budget_bounds}))


def check_status(status: StatusConfig, view: SectionView) -> None:
    if len(status.signals) > MAX_STATUS_SIGNALS:
        view.error("signals", f"at most {MAX_STATUS_SIGNALS} signals, got {len(status.signals)}")


def check_status_signals(config: AgentConfig, view: SectionView) -> None:
    """Each of status.signals must be sampled; with sampling.signals empty (every signal of the DBCs),
    the decoder checks them instead (:func:`agent.decode.decoder_for`)."""
    sampled = config.sampling.signals
    if not sampled:
        return
    names = child(view.given.get("status"), "signals")
    for index, name in enumerate(config.status.signals):
        if name not in sampled:
            view.error(
                "status",
                f"signal {name!r} is not in sampling.signals{suggest(name, sampled)}",
                node=child(names, index),
                sub=f".signals[{index}]",
            )


SIGNAL_NAME = String(pattern=r"[^.\s]+\.[^.\s]+", rule="the form MESSAGE.SIGNAL")
AGENT_SCHEMA = Section(
    AgentConfig,
    {
        "vin": String(pattern=r"[A-Za-z0-9_-]{1,32}", rule="1–32 characters of A-Z, a-z, 0-9, '_' or '-'"),
        "source": Section(
            SourceConfig,
            {
                "kind": Choice("replay", "bus"),
                "log": Nullable(FilePath(suffixes=LOG_SUFFIXES, must_exist=True)),
                "speed": Alias(Float(min=0, min_open=True), {"max": math.inf}),
            },
            (check_source,),
        ),
        "buses": ListOf(
            Section(
                BusConfig,
                {
                    "channel": String(numbers=True),
                    "interface": String(),
                    "bitrate": Nullable(Integer(min=1)),
                    "dbc": ListOf(FilePath(must_exist=True), min_len=1, single=True),
                    "j1939": Alias(Boolean(), {"auto": None}),
                    "receive_buffer_bytes": Integer(min=0),
                },
            ),
            min_len=1,
            unique="channel",
        ),
        "sampling": Section(
            SamplingConfig,
            {
                "rate_hz": Float(min=0, max=1000, min_open=True),
                "signals": ListOf(SIGNAL_NAME, unique=True),
                "bounds": MapOf(SIGNAL_NAME, Float(min=0)),
                "bounds_preset": Choice(*BOUNDS_PRESETS),
                "angles": MapOf(SIGNAL_NAME, Float(min=0, min_open=True)),
                "predictor": Choice(*predict.PREDICTORS),
                "max_hold_s": Alias(Float(min=0, min_open=True), {"auto": None}),
                "budget_bounds": MapOf(SIGNAL_NAME, Float(min=0, min_open=True)),
            },
            (check_sampling,),
        ),
        "buffer": Section(
            BufferConfig,
            {
                "path": FilePath(),
                "commit_interval_s": Float(min=0, min_open=True),
                "max_bytes": Integer(min=0),
                "max_age_s": Float(min=0),
                "full_policy": Choice("drop_oldest", "refuse_new"),
            },
        ),
        "mqtt": Section(MqttConfig, MQTT_FIELDS, MQTT_CHECKS),
        "upload": Section(
            UploadConfig,
            {
                "max_inflight_batches": Integer(min=1, max=1000),
                "max_batch_bytes": Integer(min=1024),
                "ack_timeout_s": Float(min=0, min_open=True),
                "compression": Choice("zstd", "zlib", "none"),
                "max_bytes_per_s": Float(min=0),
                "batch_interval_s": Float(min=0, max=300),
                "monthly_bytes": Integer(min=0),
            },
        ),
        "logging": LOGGING_SECTION,
        "status": Section(
            StatusConfig,
            {"signals": ListOf(SIGNAL_NAME, unique=True), "publish_interval_s": Float(min=0, min_open=True)},
            (check_status,),
        ),
    },
    (check_status_signals, check_budget_bounds),
)


def parse_agent_config(
    text: str, source_name: str, base_dir: Path, *, check_files: bool = False
) -> AgentConfig:
    """Parse the YAML ``text`` (named ``source_name`` in errors); relative paths resolve against ``base_dir``.

    ``check_files=True`` also requires the DBC files, the replay log, ``password_file`` and ``ca_file``
    to exist. Raises :class:`~agent.errors.ConfigError` listing every problem, one per line.
    """
    return parse_document(text, source_name, base_dir, AGENT_SCHEMA, check_files=check_files)


def load_agent_config(path: Path | str, *, check_files: bool = False) -> AgentConfig:
    """Read and parse the agent's config file at ``path`` (see :func:`parse_agent_config`)."""
    return load_document(path, AGENT_SCHEMA, check_files=check_files)
