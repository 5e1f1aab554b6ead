# Every target does its own set-up: the Debian packages it needs, a venv, the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# libsystemd-dev and pkg-config build systemd-python (the `systemd` extra: agent.service.logs's journald sender).
DEBS := mosquitto python3-venv libsystemd-dev pkg-config
STAMP := $(VENV)/.installed-stamp

.PHONY: all setup debs demo test bench lint soak proto clean

all: test

debs:
	@sh packaging/bootstrap.sh $(DEBS)

# The live page's browser libraries (receiver/web/package-lock.json, pinned with their hashes): npm
# installs them as published, no build step. Debian's npm when the machine has no npm of its own.
WEB := receiver/web
WEB_STAMP := $(WEB)/node_modules/.installed-stamp

$(WEB_STAMP): $(WEB)/package-lock.json
	@command -v npm >/dev/null || sh packaging/bootstrap.sh npm
	@cd $(WEB) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	@touch $(WEB_STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@$(PY) -m pip install -q -e '.[systemd]' || echo "note: systemd-python did not build; journald logging uses agent.service.logs's own native-protocol sender"
	@touch $(STAMP)

setup: debs $(STAMP) $(WEB_STAMP)

# DEMO_SERVE=1: after the table, the broker, the receiver and the live page stay up until Ctrl-C.
# STORE=postgresql: the same five vehicles into a PostgreSQL server the demo starts itself (needs postgresql).
STORE ?= sqlite
demo: setup
	@if [ "$(STORE)" = postgresql ]; then sh packaging/bootstrap.sh postgresql; fi
	$(PY) -m tests.harness.demo --store $(STORE) $(if $(filter 1,$(DEMO_SERVE)),--serve)

# Two workers (one per core of the smallest CI machine); a test module stays on one worker.
TEST_WORKERS ?= 2

# The package's install test needs these on top (a clean Debian root, lintian, man pages); postgresql: the
# tests' own PostgreSQL servers (initdb and pg_ctl in a temporary folder, never the system's cluster);
# chromium: the live page's test, headless, driven over its DevTools protocol.
TEST_DEBS := debootstrap lintian help2man binutils postgresql chromium

test: setup
	@sh packaging/bootstrap.sh $(TEST_DEBS)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

soak: setup
	EDGE_SOAK=1 $(PY) -m pytest -q -m slow

bench: setup
	@sh packaging/bootstrap.sh postgresql
	$(PY) -m tests.harness.bench

lint: setup
	$(VENV)/bin/ruff check agent receiver tests
	$(VENV)/bin/ruff format --check agent receiver tests
	$(VENV)/bin/mypy

# The Debian package: $(DEB_OUT)/edge-agent_<version>_<arch>.deb, byte-identical from the same tree
# (packaging/deb/README.md). Build on the target's architecture, with Debian 12's /usr/bin/python3.
# DEB_VERSION=0.1.0-2 overrides the Debian version; DEB_FLAGS passes options to packaging/deb/build.py.
DEB_OUT ?= dist
DEB_VERSION ?=
DEB_FLAGS ?=
DEB_BUILD_DEBS := python3-venv help2man binutils

.PHONY: deb
deb:
	@sh packaging/bootstrap.sh $(DEB_BUILD_DEBS)
	@/usr/bin/python3 packaging/deb/build.py --out $(DEB_OUT) $(if $(DEB_VERSION),--version $(DEB_VERSION)) $(DEB_FLAGS)

# Rebuild the generated protobuf module from proto/telemetry.proto.
proto: setup
	$(PY) -m grpc_tools.protoc -Iproto --python_out=agent/wire --pyi_out=agent/wire proto/telemetry.proto
	$(VENV)/bin/ruff check -q --fix agent/wire/telemetry_pb2.py agent/wire/telemetry_pb2.pyi; $(VENV)/bin/ruff format -q agent/wire/telemetry_pb2.py agent/wire/telemetry_pb2.pyi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
