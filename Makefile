# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# RadEval and medspaCy for the model metrics' tests, without the dependencies they would pull (an unpinned
	# torchvision, stanza; spaCy 3.7, which fails on numpy 2): see the 'metrics' extra in pyproject.toml.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps radeval==2.2.1 medspacy==1.3.1
	touch $(STAMP)

install: $(STAMP)

# CPU pins for figures that agree across x86-64 processors (see src/s2d_align/reproducibility.py);
# they must be set before torch loads, so they are set here (the demo sets them itself otherwise).
CPU_PINS := MKL_CBWR=AVX2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2

demo: $(STAMP)
	env $(CPU_PINS) $(BIN)/s2d-align demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache
