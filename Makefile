# Two entry points for a fresh Debian 12 / Raspberry Pi OS machine: `make demo` and `make test`.
# Both install what is missing (apt packages, a venv, the package) and are safe to run again.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := libasound2-dev libsystemd-dev pkg-config jackd2 libasound2-plugins alsa-utils \
                libsndfile1 libjack-jackd2-0 libfaketime espeak-ng systemd iproute2 \
                shellcheck fakeroot
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: deps test-deps venv demo test lint bench lock clean

# Only what the tests need on top: the remote page is tested in Debian's headless Chromium
# through its chromedriver (tests/test_remote.py); a box or a demo machine does without.
TEST_APT_PACKAGES := chromium chromium-driver

# $(call apt_install,PACKAGES): install those not installed yet (noninteractive; sudo when
# not root), so a fresh Debian machine (CI) and a machine set up long ago both work.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:" $$missing; \
	  echo "jackd2 jackd/tweak_rt_limits boolean false" | $(SUDO) debconf-set-selections; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call apt_install,$(APT_PACKAGES))

test-deps:
	$(call apt_install,$(TEST_APT_PACKAGES))

$(STAMP): pyproject.toml
	$(MAKE) deps
	[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,plot]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/backtrack demo

test: venv
	$(MAKE) deps test-deps
	$(BIN)/ruff check appliance tests bench
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check appliance tests bench

bench: venv
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# deploy/constraints.txt: the versions the box installs (deploy/install.sh -c), rewritten
# from this venv's runtime dependencies (not the test tools). Upgrade the venv, run the
# tests, then `make lock` and commit; deploy/README.md, "Pinned packages".
lock: venv
	$(BIN)/python deploy/lock.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
