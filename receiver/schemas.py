"""The schemas that agents name by hash: stored once, looked up by every receiver of the share group.

An agent sends a batch's schema whole until a receiver has acked a batch that carried it, then only its
hash (wire version 3, :func:`agent.wire.messages.schema_hash`): some 600 bytes a second saved for every
vehicle online. What makes that safe:

- A schema is stored under its hash (content-addressed: the hash is checked against the schema before
  anything is stored, so no batch can put a schema under another's name) inside the transaction of the
  batch that carried it (:func:`record`, from :meth:`receiver.store.Store.store_batch`): the ack that
  lets the agent switch to the hash is sent after that commit, so the schema is durable before any batch
  names it. Receivers of one share group share the store, so any of them can take the next batch.
- A receiver that does not find a hash (its store was replaced, or another receiver of the group writes
  to another store) stores nothing of the batch, acks nothing of it, and asks for the schema
  (``Ack.schema_needed``): the agent sends the batch again with its schema whole. Nothing is dropped.
- :class:`SchemaCache` keeps what was looked up: a hash names one schema for ever, so a cached entry is
  never stale; bounded by :data:`CACHE_SCHEMAS` (a fleet runs few configurations).

Contract: :func:`create`, :func:`record` and :func:`lookup` run on the caller's connection and thread
(``db``: :class:`receiver.backend.Db`), in the caller's transaction for :func:`record`; a
:class:`SchemaCache` belongs to the thread of the store it reads (ingest: paho's network thread).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from agent.errors import WireError
from agent.wire import schema_from_bytes
from agent.wire.messages import schema_hash
from agent.wire.values import Schema
from receiver.backend import Db

CACHE_SCHEMAS = 256


def ddl(dialect: str) -> str:
    blob, real = ("BLOB", "REAL") if dialect == "sqlite" else ("BYTEA", "DOUBLE PRECISION")
    return (
        f"CREATE TABLE IF NOT EXISTS wire_schemas (hash {blob} PRIMARY KEY, body {blob} NOT NULL, "
        f"first_seen {real} NOT NULL)"
    )


INSERT = "INSERT INTO wire_schemas VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
SELECT = "SELECT body FROM wire_schemas WHERE hash = ?"


def create(db: Db) -> None:
    db.execute(ddl(db.dialect))


def record(db: Db, digest: bytes, body: bytes) -> None:
    """Store a batch's schema (its hash checked by the wire codec) in the batch's transaction."""
    if digest and body:
        db.execute(INSERT, (digest, body, time.time()))


def lookup(db: Db, digest: bytes) -> Schema | None:
    """The schema stored under ``digest``, or ``None``. A stored body that does not hash to its key (a
    damaged row) is not used: the agent is asked for the schema instead."""
    rows = db.fetch(SELECT, (digest,))
    if not rows:
        return None
    try:
        schema = schema_from_bytes(bytes(rows[0][0]))
    except WireError:
        return None
    return schema if schema_hash(schema) == digest else None


class SchemaCache:
    """Lookups by hash through one store's connection, remembered (a hash never changes meaning)."""

    def __init__(self, db: Db) -> None:
        self._db = db
        self._known: OrderedDict[bytes, Schema] = OrderedDict()
        self.lookups = 0  # reads that went to the store

    def __call__(self, digest: bytes) -> Schema | None:
        schema = self._known.get(digest)
        if schema is not None:
            self._known.move_to_end(digest)
            return schema
        self.lookups += 1
        schema = lookup(self._db, digest)
        if schema is not None:
            self._known[digest] = schema
            if len(self._known) > CACHE_SCHEMAS:
                self._known.popitem(last=False)
        return schema
