# The two commands an operator or developer needs on a fresh machine.
#   make run   - sbc on 127.0.0.1:5060 with a built-in VOS3000 stand-in
#   make test  - installs what the tests need, then runs the whole suite
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test sipp

sipp:
	@command -v sipp >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq sip-tester; }

run: sipp
	$(PYTHON) -m pip install -q -e .
	$(PYTHON) -m sbc demo --config configs/local.yaml

test: sipp
	$(PYTHON) -m pip install -q -e '.[test]'
	$(PYTHON) -m pytest
