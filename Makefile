# The single source of commands: the README and .ci/run call these targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
PYTEST_ARGS ?=
# One cargo target dir for every clone on this machine, beside the other caches: a fresh clone
# builds incrementally once the machine has built stockpipe before.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/stockpipe/target

.PHONY: help venv build wheel lint fmt test test-rust test-python demo bench chaos fuzz clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed  ## create the virtualenv with every tool the tests need

build: venv  ## build the Rust extension into the virtualenv (release)
	maturin develop --release --quiet

wheel: venv  ## the release artefacts in dist/: a manylinux wheel (OpenSSL bundled) and the sdist
	maturin build --release --out dist
	maturin sdist --out dist

lint: build  ## cargo fmt, clippy, ruff, mypy (and the stub against the built module)
	cargo fmt --check
	cargo clippy --release --all-targets --quiet -- -D warnings
	ruff check python tests glue bench notebooks
	ruff format --check python tests glue bench notebooks
	mypy
	python -m mypy.stubtest stockpipe._native

fmt: venv  ## format Rust and Python
	cargo fmt
	ruff format python tests glue bench notebooks
	ruff check --fix python tests glue bench notebooks

test-rust:  ## Rust unit, property and fuzz-style tests
	cargo test --release --quiet

test-python: build  ## pytest against real Kafka, S3 (started by the fixtures)
	pytest $(PYTEST_ARGS)

test: build lint test-rust test-python  ## the whole test suite (what CI runs)

demo: build  ## the pipeline end to end on the embedded defaults
	stockpipe demo

bench: build  ## benchmarks side by side; writes BENCHMARKS.md (bench/run.py --quick: a few minutes)
	python bench/run.py $(BENCH_ARGS)

chaos: build  ## the fault suite on its own 3-broker stack; writes docs/fault-suite.md (about 20 minutes)
	stockpipe dev chaos --out docs/fault-suite.md

fuzz:  ## a longer run of the fuzz targets (FUZZ_CASES per target, default 200000)
	FUZZ_CASES=$${FUZZ_CASES:-200000} cargo test --release --quiet --test frame_fuzz --test decode_fuzz

clean:  ## remove build outputs (not the download cache)
	rm -rf target dist $(VENV) stockpipe-data
