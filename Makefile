# Everything installs into one virtual environment at .venv in the repository root.
#   make demo  - runs the main job (jobs/full_pipeline.py) on the embedded synthetic data, offline
#   make test  - runs the test suite
#   make test-fast - the tests not marked slow (-m "not slow"), for the edit-test loop
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch that lies on this machine's disk. Elsewhere set e.g. TORCH_SPEC="torch>=2.4"
# (a CUDA build from PyPI) or TORCH_SPEC="" to keep the torch of the image.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.catpose-installed

.PHONY: demo test test-fast install bench lint clean docs

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	@if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install -q "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) jobs/full_pipeline.py $(ARGS)

# pytest exits 5 when a selection (PYTEST_ARGS="-m ...") collects no test: said, and not a failure.
test: $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected for PYTEST_ARGS='$(PYTEST_ARGS)'"; rc=0; fi; exit $$rc

# the unmarked tests only: a few minutes, for the edit-test loop (CI runs `make test`, the whole suite)
test-fast: $(STAMP)
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected for PYTEST_ARGS='$(PYTEST_ARGS)'"; rc=0; fi; exit $$rc

bench: $(STAMP)
	$(PY) bench/data.py
	$(PY) bench/features.py
	$(PY) bench/align.py
	$(PY) bench/sync.py
	$(PY) bench/train.py
	$(PY) bench/pose.py

# the documentation site into site/ (MkDocs + Material; pages generated from the configs and bench/results)
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(PY) -m pip install -q ruff && $(VENV)/bin/ruff check catpose tests jobs bench

clean:
	rm -rf $(VENV) runs .pytest_cache site
