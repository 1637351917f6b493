# Everything a fresh Debian 12 machine needs, installed on demand (run as root).
# Two commands matter: `make demo` and `make test`. See README.md.

# The interpreter the venv is made from. By default Debian's: Mininet is packaged for it,
# and the venv sees it via --system-site-packages. Any other (PYTHON=python3.13, or one of
# pyenv's by full path) gets a venv of its own, .venv-<major.minor>, so .venv stays as it
# is; that venv sees the site-packages of its own interpreter (Debian 13's python3.13 has
# Mininet there; pyenv's has not, and the Mininet test then says so and skips).
PYTHON  ?= /usr/bin/python3
PYVER   := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(PYVER),)
$(error PYTHON=$(PYTHON) does not run: name an installed python3.11, 3.12 or 3.13)
endif
ifeq ($(origin PYTHON),file)
VENV    ?= .venv
else
VENV    ?= .venv-$(PYVER)
endif
PY      := $(VENV)/bin/python
# chromium: tests/integration/test_ui.py looks at the page /ctfw/ui/ in it, headless.
DEBS    := openvswitch-switch mininet iputils-ping ethtool iproute2 python3-venv chromium
STAMP   := $(VENV)/.installed
# Ryu 4.34 as a wheel, built from its sdist by the target interpreter alone (see below).
RYU_WHEEL := build/wheels/ryu-4.34-py3-none-any.whl

.PHONY: all deps venv test test-compat unit integration demo bench bench-smoke lint config-sample clean

all: test

# Debian packages, only the missing ones, so a prepared machine pays nothing.
deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(STAMP)

# Ryu 4.34's setup.py needs setuptools < 58 (easy_install.get_script_args), which cannot
# run on Python 3.12+ (no distutils), and pip runs that setup.py even to download it. But
# Ryu is pure Python and its sdist holds everything a wheel is made of, so
# tools/build_ryu_wheel.py (standard library only, sdist checked by sha256) packs the
# wheel directly, the same on every Python. Our own package builds in isolation with a
# current setuptools. The venv is made afresh (--clear) whenever its inputs change.
$(RYU_WHEEL): tools/build_ryu_wheel.py
	$(PYTHON) tools/build_ryu_wheel.py --out $(@D)

$(STAMP): setup.cfg setup.py pyproject.toml $(RYU_WHEEL) | deps
	$(PYTHON) -m venv --clear --system-site-packages $(VENV)
	@# git ignores .venv by name; a .venv-X.Y ignores itself (as 3.13's venv does anyway)
	echo '*' > $(VENV)/.gitignore
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(RYU_WHEEL) -e '.[test]'
	$(PY) -m ryu_ctfw.eventlet_compat install
	touch $@

# The tests run in parallel, each pytest-xdist worker in a network namespace of its own
# (tests/integration/conftest.py). They mostly wait on timers and traffic, so more workers
# than the 2 cores pay off. The whole suite, measured on a 2-core machine (shared, so
# noisy): 1 (no xdist) 515 s, 2 workers 263 s, 3 202 s, 4 152 s, 6 120 s, 8 121 s; from
# 6 on the 55 s bench smoke plus the CPU-bound unit tests set the pace. WORKERS=0: serial.
WORKERS ?= 6
XDIST   := -n $(WORKERS) --dist worksteal

test: venv
	$(PY) -m pytest -v $(XDIST)

unit: venv
	$(PY) -m pytest -v tests/unit

integration: venv
	$(PY) -m pytest -v $(XDIST) tests/integration

# What CI runs on a second Python (.ci/run): the unit suite and the integration tests of
# the seed, restart and isolation. E.g. make test-compat PYTHON=~/.pyenv/versions/3.13.0/bin/python3
COMPAT_TESTS := tests/unit tests/integration/test_seed.py \
  tests/integration/test_ports_and_restart.py tests/integration/test_isolation.py
test-compat: venv
	$(PY) -m pytest -v $(XDIST) $(COMPAT_TESTS)

demo: venv
	$(PY) -m ryu_ctfw.demo

# 500 VMs, 5,000 pairs, each figure against its baseline in the same run (several minutes).
bench: venv
	$(PY) bench/run.py --out bench/results.md

# A small run (under a minute) that checks the suite still works; asserts no times.
bench-smoke: venv
	$(PY) bench/run.py --smoke

lint: venv
	$(VENV)/bin/ruff check ryu_ctfw tests mininet bench tools
	$(VENV)/bin/ruff format --check ryu_ctfw tests mininet bench tools

# The sample config file, from the registered options (a unit test checks it is current).
config-sample: venv
	$(VENV)/bin/oslo-config-generator --namespace ryu_ctfw --output-file etc/ryu-ctfw.conf.sample

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
