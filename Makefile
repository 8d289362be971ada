# Two commands for a new user: `make demo` and `make test`. Both set up first.
PY := .venv/bin/python
export QT_QPA_PLATFORM ?= offscreen
# Bytecode caches on: every client stage is a fresh process that would otherwise compile
# the project from source (about 0.6 s of CPU each, dozens of them per test run).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup demo test lint fuzz soak bench relay clean

setup:
	@./scripts/setup.sh

# `make demo DEVICE=1`: Alice talks into the microphone and Bob plays to the speaker.
demo: setup
	$(PY) -m pipeline.demo $(if $(DEVICE),--device)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Two workers: most tests wait on real-time calls (20 ms frames, real sockets), not on CPU,
# so two run side by side on two cores in about 60 % of the time of one after the other.
test: lint
	$(PY) -m pytest -q -n 2 -m "not soak"

# The heavier fuzzing profile: many more examples per parser.
fuzz: setup
	HYPOTHESIS_PROFILE=heavy $(PY) -m pytest -q -k "fuzz or hypothesis" tests

# The long checks `make test` leaves out (pytest marker `soak`): memory over a long call and
# a loaded relay (SOAK_MINUTES each, default 30), and the relay at 2,000 sessions: about an hour.
soak: setup
	$(PY) -m pytest -q -s -m soak

bench: setup
	$(PY) -m bench

relay: setup
	$(PY) -m relay

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis
