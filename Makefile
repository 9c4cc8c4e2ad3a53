# hapair: the two commands a newcomer needs are `make demo` and `make test` (run as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
HAPAIR := $(VENV)/bin/hapair
NAME ?= demo
APT_PACKAGES := haproxy nftables dnsmasq-base iproute2 iputils-ping iputils-arping procps curl \
	openssl wrk keepalived heartbeat python3-venv python3-pip util-linux \
	chromium chromium-driver prometheus cloud-init faketime

.PHONY: setup demo test test-fast lint down clean-lab

# Install what is missing (Debian packages, a .venv with hapair and its tools); idempotent.
setup: .setup-done
.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch .setup-done

# Bring up the demo lab and show it working.
demo: setup
	$(HAPAIR) up --name $(NAME)
	@echo
	$(HAPAIR) curl --name $(NAME)
	@echo
	$(HAPAIR) status --name $(NAME)
	@echo
	$(HAPAIR) open --name $(NAME)

# The whole suite: lint, types, unit, aws (moto), lab end-to-end, bench smoke.
test: setup
	bash scripts/test.sh

# Unit tests only (no root needed).
test-fast: setup
	$(VENV)/bin/pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy

down:
	$(HAPAIR) down --name $(NAME)

# Sweep every lab namespace left behind by tests (names hp<hex>-*) and the demo.
clean-lab:
	bash scripts/clean-lab.sh
