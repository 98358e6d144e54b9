# The two commands an operator or developer needs on a fresh machine.
#   make run   - sbc on 127.0.0.1:5060 with a built-in VOS3000 stand-in
#   make test  - installs what the tests need, then runs the whole suite
# Both work in the project's own virtual environment (.venv/), made with the
# distribution's python3: nothing is installed into the system Python (PEP 668).
# A second run reuses .venv/; a newer pyproject.toml refreshes it.
# Optional: `make compiled` builds the pure core with mypyc into .venv-compiled/,
# `make test-compiled` runs the core's tests and the call tests against it.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(SUDO) apt-get

.PHONY: run test venv sipp baresip firewall-tools chromium kamailio python-venv compiler compiled test-compiled

# Debian and Ubuntu ship venv and ensurepip in python3-venv, apart from python3.
python-venv:
	@$(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq python3-venv; }

$(VPY): | python-venv
	$(PYTHON) -m venv $(VENV)

# One stamp per extra: its prerequisites say when the install is out of date.
$(VENV)/.installed-run: pyproject.toml | $(VPY)
	$(VPY) -m pip install -q --disable-pip-version-check -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(VPY)
	$(VPY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-run

sipp:
	@{ command -v sipp && command -v sipsak; } >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq sip-tester sipsak; }

# The TLS end-to-end tests (tests/e2e/test_tls.py) place a call with baresip.
baresip:
	@command -v baresip >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq baresip; }

# The kernel tests (tests/firewall/test_firewall.py) load rules into a network namespace.
firewall-tools:
	@( PATH="$$PATH:/usr/sbin:/sbin"; for t in ip nft iptables-restore ip6tables-restore ipset; do command -v $$t || exit 1; done ) >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq iproute2 nftables iptables ipset; }

# The dashboard test (tests/admin/test_dashboard.py) drives headless Chromium.
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq chromium chromium-driver; }

# The side-by-side load test (loadtest/compare.py, tests/test_loadtest_compare.py)
# runs Kamailio with loadtest/reference/kamailio.cfg.
kamailio:
	@( PATH="$$PATH:/usr/sbin:/sbin"; command -v kamailio ) >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq kamailio; }

run: sipp $(VENV)/.installed-run
	$(VPY) -m tools.demo --config configs/local.yaml

test: sipp baresip firewall-tools chromium kamailio $(VENV)/.installed-test
	$(VPY) -m pytest

# ---- the optional compiled build (setup.py: SBC_COMPILE=1, the module list).
# Its own venv, so the source tree and .venv/ never hold a compiled module: the
# wheel is built under build/compiled/ and installed into .venv-compiled/, again
# whenever a file of the package changes.
CVENV ?= .venv-compiled
CVPY := $(CVENV)/bin/python
CWHEELS := build/compiled/wheels
PACKAGE_FILES := $(shell find sbc -type f ! -path '*/__pycache__/*' ! -name '*.pyc') setup.py pyproject.toml

# mypyc needs a C compiler and the headers of the Python it compiles for.
compiler:
	@{ command -v gcc && $(PYTHON) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; } >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq gcc $(notdir $(PYTHON))-dev; }

$(CVPY): | python-venv
	$(PYTHON) -m venv $(CVENV)

$(CVENV)/.installed-compiled: $(PACKAGE_FILES) | compiler $(CVPY)
	$(CVPY) -m pip install -q --disable-pip-version-check 'setuptools>=68' wheel 'mypy>=1.10'
	rm -rf build/compiled
	SBC_COMPILE=1 $(CVPY) -m pip wheel -q --disable-pip-version-check --no-build-isolation --no-deps -w $(CWHEELS) .
	$(CVPY) -m pip install -q --disable-pip-version-check --force-reinstall --no-deps $(CWHEELS)/sbc-*.whl
	$(CVPY) -m pip install -q --disable-pip-version-check "$$(ls $(CWHEELS)/sbc-*.whl)[test]"
	cd / && $(abspath $(CVPY)) -c 'from sbc import build_info as b; print("sbc core:", b.core(), b.where())'
	@touch $@

compiled: $(CVENV)/.installed-compiled

# The core's unit tests and the SIPp call tests against the compiled package,
# run from a copy of tests/ (and what they use) without sbc/: pytest puts the
# tests' root on sys.path, and the end-to-end harness puts it on PYTHONPATH,
# so a source tree's sbc/ there would be imported instead.  SBC_EXPECT_CORE
# makes tests/test_build_info.py check that every module setup.py compiles was
# loaded compiled, and every sbc an end-to-end test starts log core=mypyc.
COMPILED_TESTS := tests/test_build_info.py tests/sip tests/core tests/e2e/test_calls.py tests/e2e/test_call_state.py
# Counts calls by replacing a parser function with monkeypatch: compiled callers
# bind module functions early and never see the replacement.
COMPILED_DESELECT := tests/sip/test_parser.py::test_framer_reads_a_head_once

test-compiled: sipp $(CVENV)/.installed-compiled
	d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && \
	tar -c --exclude=__pycache__ --exclude=loadtest/results setup.py pyproject.toml tests loadtest tools | tar -x -C "$$d" && \
	cd "$$d" && SBC_EXPECT_CORE=mypyc $(abspath $(CVPY)) -m pytest -p no:cacheprovider $(COMPILED_TESTS) $(COMPILED_DESELECT:%=--deselect %)

# The container image built and run on a real Docker engine (tests/docker, README
# "Docker"): needs docker.io and debootstrap, and a running dockerd or root.
.PHONY: docker-test
docker-test: sipp $(VENV)/.installed-test
	$(VPY) -m pytest -m docker tests/docker
