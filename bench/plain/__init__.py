"""The plain Django Channels app that gofly's figures are compared with (issue 6).

What ../shared/performance-notes.md measured before gofly had code: a visitor consumer and an
agent consumer forwarding through the channel layer, no database work, no authentication, no
outbox, no ordering. It speaks just enough of gofly's protocol for `bench/loadtest.py` to
drive it unchanged: `POST /api/widget/v1/sessions` answers a `ws_url`; a visitor socket gets
`ready`, and each `message` it sends is forwarded to every agent socket and acked at once;
`ping` gets `pong`.

    DJANGO_SETTINGS_MODULE=bench.plain.settings .venv/bin/daphne -b 127.0.0.1 -p 8792 \\
        bench.plain.asgi:application

With REDIS_URL set it uses the Redis pub/sub layer, as gofly does in production; else the
in-memory layer.
"""
