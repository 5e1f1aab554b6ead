# Every target does its own set-up: the Debian packages it needs, a venv, the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEBS := mosquitto python3-venv
STAMP := $(VENV)/.installed-stamp

.PHONY: all setup debs demo test bench lint soak proto clean

all: test

debs:
	@sh packaging/bootstrap.sh $(DEBS)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: debs $(STAMP)

demo: setup
	$(PY) -m tests.harness.demo

test: setup
	$(PY) -m pytest -q

soak: setup
	EDGE_SOAK=1 $(PY) -m pytest -q -m slow

bench: setup
	$(PY) -m tests.harness.bench

lint: setup
	$(VENV)/bin/ruff check agent receiver tests
	$(VENV)/bin/ruff format --check agent receiver tests
	$(VENV)/bin/mypy

# Rebuild the generated protobuf module from proto/telemetry.proto.
proto: setup
	$(PY) -m grpc_tools.protoc -Iproto --python_out=agent --pyi_out=agent proto/telemetry.proto

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
