"""The generated protobuf module matches proto/telemetry.proto (rebuild it with `make proto`)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.wire import telemetry_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_generated_module_is_not_stale(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) compiles the .proto")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={tmp_path}",
            str(ROOT / "proto" / "telemetry.proto"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    # Compare the descriptors, not the text: a newer protoc writes another version header for the same schema.
    fresh = (tmp_path / "telemetry_pb2.py").read_text()
    literal = re.search(r"AddSerializedFile\((b'.*?')\)", fresh)
    assert literal, "protoc's output has no serialized descriptor"
    assert ast.literal_eval(literal.group(1)) == telemetry_pb2.DESCRIPTOR.serialized_pb, (
        "agent/telemetry_pb2.py is stale: run `make proto`"
    )


def test_wire_version_is_in_the_schema() -> None:
    from agent import wire

    assert telemetry_pb2.Envelope.DESCRIPTOR.fields_by_name["version"].number == 1
    assert wire.WIRE_VERSION == 3  # version 3: schemas by hash (issue 13); see proto/telemetry.proto
    assert wire.messages.BODY_VERSIONS == {
        telemetry_pb2.BODY_KIND_BATCH: 2,
        telemetry_pb2.BODY_KIND_ACK: 1,
        telemetry_pb2.BODY_KIND_STATUS: 1,
    }
