# The two commands an operator or developer needs on a fresh machine.
#   make run   - sbc on 127.0.0.1:5060 with a built-in VOS3000 stand-in
#   make test  - installs what the tests need, then runs the whole suite
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test sipp baresip firewall-tools chromium kamailio

sipp:
	@{ command -v sipp && command -v sipsak; } >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq sip-tester sipsak; }

# The TLS end-to-end tests (tests/e2e/test_tls.py) place a call with baresip.
baresip:
	@command -v baresip >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq baresip; }

# The kernel tests (tests/test_firewall.py) load rules into a network namespace.
firewall-tools:
	@( PATH="$$PATH:/usr/sbin:/sbin"; for t in ip nft iptables-restore ip6tables-restore ipset; do command -v $$t || exit 1; done ) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq iproute2 nftables iptables ipset; }

# The dashboard test (tests/test_dashboard.py) drives headless Chromium.
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; }

# The side-by-side load test (loadtest/compare.py, tests/test_loadtest_compare.py)
# runs Kamailio with loadtest/reference/kamailio.cfg.
kamailio:
	@( PATH="$$PATH:/usr/sbin:/sbin"; command -v kamailio ) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq kamailio; }

run: sipp
	$(PYTHON) -m pip install -q -e .
	$(PYTHON) -m sbc demo --config configs/local.yaml

test: sipp baresip firewall-tools chromium kamailio
	$(PYTHON) -m pip install -q -e '.[test]'
	$(PYTHON) -m pytest
