# Two entry points, both on a fresh clone with python3, pip and make:
#   make quickstart   set up .venv/ and compress the bundled default recipe
#   make test         set up .venv/ and run the test suite
PYTHON ?= python3
VENV := .venv
EXTRAS := onnx,torch,data,plot,litert-convert,dev

.PHONY: setup quickstart test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

quickstart: setup
	$(VENV)/bin/edgedl compress recipes/quickstart.yaml --out runs/quickstart --force

test: setup
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) runs
