# The whole set-up on a fresh machine with Python >= 3.11:
#   make demo    the main job on the built-in (synthetic) cohort, then its figures
#   make test    the test suite (make test PYTEST_ARGS='-m "not slow"' to skip the end-to-end runs)
# Both create the virtual environment .venv and install the package into it when needed.

# The interpreter that creates .venv: python3.11 when it is on PATH, python3 otherwise.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell command -v python3.11 >/dev/null 2>&1 && echo python3.11 || echo python3)
endif
VENV ?= .venv
# Extra arguments of `python -m venv` (e.g. VENV_ARGS=--system-site-packages to reuse an installed TensorFlow).
VENV_ARGS ?=
# Extra arguments of pytest, e.g. PYTEST_ARGS='-m "not slow"' or PYTEST_ARGS=tests/models.
PYTEST_ARGS ?=

VPY := $(VENV)/bin/python
# Written after a successful install; re-install when setup.cfg or pyproject.toml is newer.
STAMP := $(VENV)/.tfrobseg-installed

.DEFAULT_GOAL := help
.PHONY: help demo test install clean

help:
	@echo "make demo     run experiments/crossval.py --model recurrent_unet on the built-in synthetic cohort, then its figures"
	@echo "make test     run the test suite (PYTEST_ARGS='-m \"not slow\"' skips the end-to-end tests)"
	@echo "make install  only create $(VENV) and install the package with its test extras"
	@echo "make clean    remove $(VENV) and build/test caches (keeps data/ and results/)"

$(VENV)/pyvenv.cfg:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make: tfrobseg needs Python >= 3.11, but '$(PYTHON)' is $$($(PYTHON) -c 'import platform; print(platform.python_version())' 2>/dev/null || echo 'not found'); run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV_ARGS) $(VENV) || { rm -rf $(VENV); exit 1; }

$(STAMP): $(VENV)/pyvenv.cfg setup.cfg pyproject.toml
	$(VPY) -m pip install -e ".[test]"
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VPY) experiments/crossval.py --model recurrent_unet
	$(VPY) figures/make_figures.py --results results/builtin

test: $(STAMP)
	$(VPY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
