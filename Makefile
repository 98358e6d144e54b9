# The two commands an operator or developer needs on a fresh machine.
#   make run   - sbc on 127.0.0.1:5060 with a built-in VOS3000 stand-in
#   make test  - installs what the tests need, then runs the whole suite
PYTHON ?= python3

.PHONY: run test deps

deps:
	@if ! command -v sipp >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq sip-tester; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq sip-tester; fi; \
	fi
	$(PYTHON) -m pip install -q -e '.[test]'

run:
	$(PYTHON) -m pip install -q -e .
	$(PYTHON) -m sbc demo --config configs/local.yaml

test: deps
	$(PYTHON) -m pytest
