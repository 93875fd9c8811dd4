# The two commands: `make run` (app with demo data, web + worker) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install lint bench check-deploy clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is needed (set PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

.env:
	@echo "Creating .env for local development (DEBUG on, random secret key)"
	@printf 'DEBUG=true\nSECRET_KEY=%s\n' "$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" > .env

run: install .env
	$(PY) manage.py migrate --noinput
	HOST=$(HOST) PORT=$(PORT) $(PY) manage.py load_demo_data
	HOST=$(HOST) PORT=$(PORT) $(PY) manage.py runall --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: install
	$(PY) -m bench $(BENCH_ARGS)

check-deploy: install
	DEBUG=false SECRET_KEY=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))') \
	  ALLOWED_HOSTS=billing.example.com ANYMAIL_WEBHOOK_SECRET=ci:$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(24))') \
	  $(PY) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf $(VENV) var
