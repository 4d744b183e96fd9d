# The two commands a new user needs (see README): `make demo` and `make test`.
# Both build the same virtual environment in .venv from requirements.txt (the pinned versions CI tests).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench-classical clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(BIN)/bdn demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

# The classical table of the README (about an hour on 2 cores).
bench-classical: $(VENV)/.installed
	$(BIN)/bdn bench --methods noisy nlm median adaptive_median adaptive_wiener bm3d \
		--datasets Set12 BSD68 CC PolyU --sigma 15 25 50 --run classical

clean:
	rm -rf $(VENV) results/demo
