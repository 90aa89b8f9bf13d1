# agriseries: the two commands of the README's quick start.
#   make demo   create .venv, install agriseries, ingest the bundled sample products into
#               build/demo-store (COG + STAC), make the July 2018 L3A synthesis of T31UDS
#               and print what was made; run the demo site twice; then a site that fills its
#               own inbox from a loopback replay of real provider catalogues (search, windowed
#               fetch, ingest, L3A/L3B: agriseries.acquire.demo)
#   make test   create .venv, install agriseries with its test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STORE  ?= build/demo-store

# Real sample products bundled under tests/data (see tests/data/README.md for their origin).
# They are trimmed copies (the sample SAFE keeps its 60 m bands only, so it has no B08):
# --allow-missing-bands ingests the bands that are there.
DEMO_INPUTS = $(wildcard tests/data/safe/*.SAFE) \
              $(wildcard tests/data/landsat/LC08_*_T?) \
              $(wildcard tests/data/muscate/L8_N2A/LANDSAT8_*D0005H0002) \
              $(wildcard tests/data/worldcereal/S2_L2A_*m_*.nc) \
              $(wildcard tests/data/worldcereal/L8_SR_*.nc)

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	rm -rf $(STORE)
	$(BIN)/agriseries ingest $(DEMO_INPUTS) --store $(STORE) --allow-missing-bands
	$(BIN)/agriseries list --store $(STORE) --level L2A --tile T29UNU
	$(BIN)/agriseries list --store $(STORE) --level L2A --tile T31UDS --from 2018-07-01 --to 2018-07-31
	$(BIN)/agriseries composite --store $(STORE) --tile T31UDS --period 2018-07
	rm -rf build/demo-production
	$(BIN)/agriseries run sites/demo.yaml
	$(BIN)/agriseries run sites/demo.yaml
	$(BIN)/agriseries status sites/demo.yaml
	$(BIN)/python -m agriseries.acquire.demo --data tests/data --work build/demo-acquire

test: $(VENV)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build .pytest_cache
