# The two commands of the README. Only Python 3.11+ and make are needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test install install-dev lint messages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# `make run` installs only what runs the product; `make test` adds the test tools.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py gofly_demo
	$(BIN)/python manage.py gofly_serve --port $(PORT)

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Needs GNU gettext (msgfmt); the compiled .mo files are committed so `make run` does not.
messages: install-dev
	$(BIN)/python manage.py makemessages -l zh_Hans --add-location=file --ignore=.venv --ignore=var
	$(BIN)/python manage.py makemessages -d djangojs -l zh_Hans --add-location=file --ignore=.venv --ignore=var
	$(BIN)/python manage.py compilemessages -l zh_Hans --ignore=.venv

clean:
	rm -rf $(VENV) var
