# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# A CPU build of torch; override e.g. `make demo TORCH_SPEC="torch==2.4.1"` or TORCH_SPEC= to keep yours.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=

.PHONY: demo test lint venv clean bench

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install -q "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q -e ".[test,zarr,dask]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) scripts/demo.py --out-path $(DEMO_DIR)

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check tomodl tests scripts

bench: venv
	$(PY) scripts/bench_fbp.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
