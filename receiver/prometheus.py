"""``GET /metrics``: the receiver in Prometheus' text format, through ``prometheus-client``, read at scrape time.

Every family is computed when it is scraped, from the store (what every ``run`` process recorded:
:mod:`receiver.metrics`; the latency histograms: :mod:`receiver.latency`; the store's size) and from the
API's own MQTT client (:class:`receiver.fleet.FleetWatch`): nothing is cached between scrapes, so two
``serve`` processes answer the same. Runs on the scraping request's worker thread, on its store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from receiver import latency, metrics
from receiver.fleet import FleetWatch
from receiver.store import Store

TOTALS = {
    "batches": "Batches stored and acked (duplicates included)",
    "samples": "Values stored",
    "wire_bytes": "Payload bytes of the batches stored (MQTT's own overhead not counted)",
    "acks": "Acks published after a commit",
}


def store_bytes(store: Store) -> float:
    """The store's size on disk: a SQLite file with its WAL, or PostgreSQL's database size."""
    if store.db.dialect == "postgresql":
        return float(store.db.fetch("SELECT pg_database_size(current_database())")[0][0])
    paths = (store.path, f"{store.path}-wal")
    return float(sum(os.path.getsize(path) for path in paths if os.path.exists(path)))


class FleetCollector(Collector):
    """Reads the families from ``store()`` (the calling thread's store) and the fleet watch."""

    def __init__(self, store: Callable[[], Store], watch: FleetWatch | None) -> None:
        self.store, self.watch = store, watch

    def collect(self) -> Iterator[Metric]:
        store = self.store()
        totals = metrics.read(store.db)
        for field, doc in TOTALS.items():
            family = CounterMetricFamily(f"edge_receiver_{field}", doc, labels=["vin"])
            for vin, per_vin in sorted(totals.items()):
                if vin:
                    family.add_metric([vin], getattr(per_vin, field))
            yield family
        rejected = CounterMetricFamily(
            "edge_receiver_rejected_payloads", "Payloads refused (never acked), all receivers"
        )
        rejected.add_metric([], totals[""].rejected if "" in totals else 0)
        yield rejected
        yield from self._latency(latency.read(store.db))
        yield GaugeMetricFamily(
            "edge_receiver_store_bytes", "The store's size on disk", value=store_bytes(store)
        )
        yield GaugeMetricFamily("edge_receiver_vehicles", "Vehicles in the store", value=len(store.vins()))
        if self.watch is not None:
            online = sum(status.online for status in list(self.watch.statuses.values()))
            yield GaugeMetricFamily(
                "edge_receiver_vehicles_online", "Vehicles whose status says online", value=online
            )
            up = GaugeMetricFamily("edge_receiver_api_broker_connected", "1 while the API hears the broker")
            up.add_metric([], 1.0 if self.watch.connected else 0.0)
            yield up

    @staticmethod
    def _latency(per_vin: dict[str, dict[str, latency.Histogram]]) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "edge_receiver_latency_seconds",
            "Seal (agent) to commit (receiver) of each chunk stored, live and backlog apart",
            labels=["vin", "kind"],
        )
        for vin, kinds in sorted(per_vin.items()):
            for kind, histogram in sorted(kinds.items()):
                buckets: list[Any] = []
                seen = 0
                for edge, count in zip(latency.EDGES, histogram.counts, strict=False):
                    seen += count
                    buckets.append((repr(edge), seen))
                buckets.append(("+Inf", histogram.total))
                # The exact sum is not kept (buckets only): each count at its bucket's lower edge.
                low = sum(
                    count * (latency.EDGES[index - 1] if index else 0.0)
                    for index, count in enumerate(histogram.counts)
                )
                family.add_metric([vin, kind], buckets, sum_value=low)
        yield family


def registry(store: Callable[[], Store], watch: FleetWatch | None) -> CollectorRegistry:
    """A registry of its own (not the process's default one, so tests can build several apps)."""
    out = CollectorRegistry(auto_describe=False)
    out.register(FleetCollector(store, watch))
    return out
