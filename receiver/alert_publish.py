"""Publishing the stored alert episodes (:mod:`receiver.alerts`) on ``{prefix}/{vin}/alerts`` at QoS 1.

Contract
- Owned by a :class:`receiver.ingest.Receiver` and called on paho's network thread only (the thread that
  uses the receiver's store): :meth:`AlertPublisher.publish` after each batch's commit and on each
  (re)connection, :meth:`AlertPublisher.confirmed` from ``on_publish``. Neither blocks but on the store.
- A message is the episode's JSON (:data:`receiver.alerts.FIELDS` plus ``lossy``; ``end`` null while open),
  published for each row whose ``published`` flag is 0 (new, or newly ended); the row is marked published
  when the broker acknowledges the message (PUBACK: paho's ``on_publish``). Until then the message is in
  flight and not sent again by this receiver; after a crash or a restart, a row not yet marked is sent
  again with the same ``id``: at least once on the wire, exactly once in the store.
- A storage error is logged and left for the next call: alerts never stop ingest.
"""

from __future__ import annotations

import json
from typing import Any

import paho.mqtt.client as paho

from agent.errors import StorageError
from receiver import alerts
from receiver.store import Store


class AlertPublisher:
    """Publishes a store's unpublished episodes and marks them published once confirmed."""

    def __init__(self, store: Store, prefix: str, log: Any) -> None:
        self.store, self.prefix, self.log = store, prefix, log
        self._in_flight: dict[int, tuple[int, bool]] = {}  # mid -> (alert id, whether it carried the end)
        self.published = 0  # messages the broker confirmed

    def publish(self, client: paho.Client) -> None:
        """Publish every unpublished row that is not in flight already."""
        try:
            rows = alerts.unpublished(self.store.db)
        except StorageError as error:
            self.log.error("alerts_read_failed", reason=str(error))
            return
        sending = set(self._in_flight.values())
        for row in rows:
            key = (int(str(row["id"])), row["end"] is not None)
            if key in sending:
                continue
            info = client.publish(f"{self.prefix}/{row['vin']}/alerts", json.dumps(row), qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:  # disconnected: sent at the next (re)connection
                self.log.warning("alert_not_sent", alert=key[0], reason=paho.error_string(info.rc))
                return
            self._in_flight[info.mid] = key

    def confirmed(self, mid: int) -> None:
        """``on_publish`` of ``mid``: mark its row published (a mid of an ack or unknown: nothing)."""
        key = self._in_flight.pop(mid, None)
        if key is None:
            return
        try:
            self.store.write("mark alerts published in", lambda db: alerts.mark_published(db, [key]))
        except StorageError as error:  # published again later: at least once
            self.log.error("alert_mark_failed", alert=key[0], reason=str(error))
            return
        self.published += 1

    def forget(self) -> None:
        """A lost connection: paho's unconfirmed messages may be lost with it; send those rows again."""
        self._in_flight.clear()
