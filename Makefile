# Two set-up commands: `make run` and `make test`. Both are idempotent on a fresh
# Debian machine: they create .venv, install what is missing, then do their job.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.tinyserve-installed
PYTEST_ARGS ?=

# Debian packages that the GUI needs, headless included (Xvfb + Mesa + Qt's xcb plugin):
# `make run` and the GUI/OpenGL tests. Evaluations read the shipped held-out text, so
# python3.11-doc is not here: only `tinyserve train-lm` reads it, and says so when missing.
DEB_PKGS := xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 \
  libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
  libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libdbus-1-3 libfontconfig1

.PHONY: run test install sysdeps clean-venv

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch is installed first, pinned to the CPU build on this disk, when the venv has none:
# pyproject then finds `torch>=2.4` met and pip never resolves it to a multi-GB CUDA build
# (a torch already present, of any release from 2.4 on, is kept).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

sysdeps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: missing Debian packages (not root, not installing):$$missing"; fi; \
	fi

# lint-imports: the architecture contracts in pyproject.toml ([tool.importlinter])
test: install sysdeps
	$(VENV)/bin/lint-imports --no-cache
	@if [ -z "$$DISPLAY" ] && command -v xvfb-run >/dev/null; then \
	  xvfb-run -a -s "-screen 0 1280x1024x24" $(PY) -m pytest $(PYTEST_ARGS); \
	else $(PY) -m pytest $(PYTEST_ARGS); fi

run: install sysdeps
	@if [ -z "$$DISPLAY" ] && [ -z "$$WAYLAND_DISPLAY" ]; then \
	  echo "no display: starting under xvfb-run (use a desktop session to see the window)"; \
	  xvfb-run -a -s "-screen 0 1280x1024x24" $(VENV)/bin/tinyserve-gui; \
	else $(VENV)/bin/tinyserve-gui; fi

clean-venv:
	rm -rf $(VENV)
