# Two commands do all the set-up on a fresh machine:
#   make demo   -> the main job (full pipeline on the embedded synthetic default)
#   make test   -> the test suite
# Both create .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
NODEPS := requirements-nodeps.txt smart_r1/metrics/requirements-official-nodeps.txt
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py $(NODEPS) | sha1sum | cut -c1-12)
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv sysdeps demo test test-fast bench clean

# Debian packages the test suite uses: Chromium (headless check of the HTML report) and
# tcmalloc (makes the official TensorFlow scorer ~2.6x faster). Installed when running as root.
SYSDEPS := chromium libtcmalloc-minimal4

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py $(NODEPS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,official]'
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

sysdeps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  missing=""; for p in $(SYSDEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "note: not root or no apt-get; install $(SYSDEPS) yourself"; fi

demo: venv
	$(BIN)/smart-r1 demo

test: venv sysdeps
	$(BIN)/python -m pytest -q tests

test-fast: venv sysdeps
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: venv
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .smart_r1_runs
