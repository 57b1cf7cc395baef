# make demo: set up (first run only), then compress a sample photo with the shipped model.
# make test: set up (first run only), then lint and run the test suite.
# make fuzz: the coders and the decoder against damaged input, FUZZ_SECONDS each, then the test
# suite with the C++ extensions built under the sanitizers (docs/CODER.md, "Fuzzing").

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FUZZ_SECONDS ?= 600

.PHONY: demo test lint bench fuzz clean

$(STAMP): pyproject.toml setup.py $(wildcard csrc/*.h csrc/*.cpp)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # first: the local CPU build, not a CUDA one
	$(PY) -m pip install -q -e '.[dev,triton,ray]'  # ray: for its tests
	# CompressAI, the reference of the import and zoo tests (tests/compressai_reference.py)
	$(PY) -m pip install -q --no-deps compressai==1.2.8 torch_geometric==2.8.1 \
		pytorch_msssim==1.0.0 einops xxhash psutil
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m engine demo

lint: $(STAMP)
	$(VENV)/bin/ruff check engine kernels tests benchmarks

test: lint
	TRITON_INTERPRET=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-enable

fuzz: $(STAMP)
	bash tests/fuzz/fuzz.sh --seconds $(FUZZ_SECONDS)
	cd build/fuzz && $(abspath $(PY)) $(CURDIR)/tests/fuzz/codec_fuzz.py --seconds $(FUZZ_SECONDS)
	bash tests/fuzz/sanitized_suite.sh

clean:
	rm -rf build *.egg-info engine/*.so $(VENV)
