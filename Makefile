# Two entry points, both on a fresh clone with python3, pip and make:
#   make quickstart   set up .venv/ and compress the bundled default recipe
#   make test         set up .venv/ and run the test suite
PYTHON ?= python3
VENV := .venv
EXTRAS := onnx,torch,data,plot,litert-convert,hf,gpu,tensorrt-plan,postgres,dev

# Wheels of the device-side install (edgedl[onnx] and edgedl[litert]: numpy and one backend, no
# torch), taken from pyproject.toml: the clean-venv test installs from them offline.
WHEELHOUSE := $(VENV)/wheelhouse

.PHONY: setup quickstart test clean

setup: $(VENV)/.installed $(WHEELHOUSE)/.done

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

$(WHEELHOUSE)/.done: $(VENV)/.installed
	$(VENV)/bin/python -m pip download --quiet -d $(WHEELHOUSE) -c constraints.txt ".[onnx,litert]"
	touch $@

quickstart: setup
	$(VENV)/bin/edgedl compress recipes/quickstart.yaml --out runs/quickstart --force

test: setup
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) runs
