# Set-up is idempotent: each step leaves a stamp and reruns only when its inputs change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
WEB := pando/web
DEMO_PORT ?= 5000
PYTEST_ARGS ?=

.PHONY: install web chromium demo test docs clean bench-quick bench-full bench-paper

install: $(STAMPS)/install web

$(STAMPS)/venv:
	@mkdir -p $(STAMPS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@touch $@

$(STAMPS)/install: $(STAMPS)/venv setup.cfg setup.py pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# Pyodide comes from the npm registry, pinned by the lock file, into an ignored folder.
web: $(WEB)/node_modules/.package-lock.json

$(WEB)/node_modules/.package-lock.json: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Debian's Chromium for the browser tests (Playwright drives it; its own download cannot work here).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  || echo "WARNING: could not install Debian's chromium: the browser tests will be SKIPPED"; \
	fi

# The demo's volunteer needs the run's join key: the demo makes one for itself.
demo: install
	@echo "A native volunteer with 2 workers joins; open the printed URL in a browser to join too."
	@key=$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))'); \
	$(BIN)/pando-volunteer "http://localhost:$(DEMO_PORT)/#key=$$key;" --workers 2 --name demo 2>/dev/null & \
	$(BIN)/pando examples/square.py --port $(DEMO_PORT) --join-key "$$key" 1 2 3 4 5 6 7 8 9 10; \
	status=$$?; wait; exit $$status

test: install chromium
	$(BIN)/python -m mypy pando
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The man page and the bash completion are made from `pando --help`; test/test_docs.py checks they are current.
docs: install
	$(BIN)/python docs/generate.py

# Benchmarks live in bench/ (see bench/README.md); these are shortcuts.
bench-quick bench-full bench-paper: install
	$(MAKE) -C bench $(@:bench-%=%)

clean:
	rm -rf $(VENV) $(STAMPS) $(WEB)/node_modules build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
