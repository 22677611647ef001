# Two targets a new user needs: `make demo` (set up + run the main job on a bundled clip) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLIP ?= assets/clips/bikes_4s.mp4
PRESET ?= demo

.PHONY: setup browser demo test

$(BIN)/m3cvc: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,convert]'
	touch $(BIN)/m3cvc

setup: $(BIN)/m3cvc $(VENV)/.browser

# The test of `m3cvc eval`'s HTML report opens it in headless Chromium: install Debian's package when
# apt-get is there and no chromium is on the PATH, once per .venv (`make browser` tries again). A failure
# only skips that test (`make demo` needs no browser).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
browser:
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "note: chromium not installed; the HTML report's browser test will be skipped" >&2

$(VENV)/.browser: | $(BIN)/m3cvc
	@$(MAKE) --no-print-directory browser
	@touch $@

# The main job: encode the bundled clip to a real bitstream, inspect it, decode it to an MP4.
demo: setup
	mkdir -p out
	$(BIN)/m3cvc encode $(CLIP) -o out/bikes.m3cvc --preset $(PRESET)
	$(BIN)/m3cvc inspect out/bikes.m3cvc
	$(BIN)/m3cvc decode out/bikes.m3cvc -o out/bikes.mp4
	@echo "decoded video: out/bikes.mp4"

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
