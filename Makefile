# The two commands an operator or developer needs on a fresh machine.
#   make run   - sbc on 127.0.0.1:5060 with a built-in VOS3000 stand-in
#   make test  - installs what the tests need, then runs the whole suite
# Both work in the project's own virtual environment (.venv/), made with the
# distribution's python3: nothing is installed into the system Python (PEP 668).
# A second run reuses .venv/; a newer pyproject.toml refreshes it.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(SUDO) apt-get

.PHONY: run test venv sipp baresip firewall-tools chromium kamailio python-venv

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
