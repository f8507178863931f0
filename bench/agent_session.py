"""Print a Django session key that logs the demo agent in, for `bench/loadtest.py --agent-cookie`.

Run it with the same environment as the server under test (GOFLY_DATA_DIR, DATABASE_URL, ...),
from the repository root:

    GOFLY_DATA_DIR=/tmp/benchvar .venv/bin/python -m bench.agent_session [--username demo]

It writes one session row to the server's session store (the database by default) and prints
only the session key on stdout, so `--agent-cookie "$(python -m bench.agent_session)"` works.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module
from pathlib import Path


def make_session(username: str) -> str:
    repo = Path(__file__).resolve().parent.parent
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gofly_project.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )

    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise SystemExit(f"No user {username!r}; run `manage.py gofly_demo` first.")
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = user._meta.pk.value_to_string(user)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    return store.session_key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--username", default="demo")
    args = parser.parse_args(argv)
    print(make_session(args.username))


if __name__ == "__main__":
    main()
