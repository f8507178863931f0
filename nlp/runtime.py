"""The model each process answers with: loaded once, swapped without a restart.

`active_model(site_id)` returns the site's active version and its loaded model. A process
keeps what it loaded and asks the database which version is active at most every
`nlp.version_check_seconds`; besides, `announce` (called after an activation commits)
publishes the site id on Redis, and every process that has asked for a model listens and drops
its copy at once. So a new version serves everywhere within a moment, and within the check
interval even if the announcement is lost. A caller holds the model object it got for as long
as its request lasts, so a swap never changes the model under a request in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from nlp.classifier import IntentModel

logger = logging.getLogger(__name__)

CHANNEL = "nlp.versions"


@dataclass(frozen=True)
class Loaded:
    version_id: int
    number: int
    model: IntentModel


_lock = threading.Lock()
_loaded: dict[int, Loaded] = {}
_checked: dict[int, float] = {}
_listener: threading.Thread | None = None


def _channel() -> str:
    return f"{settings.GOFLY['redis']['prefix']}:{CHANNEL}"


def _redis_url() -> str | None:
    hosts = settings.GOFLY["redis"]["hosts"]
    return hosts[0] if hosts else None


def forget(site_id: int | None = None) -> None:
    """Drop the loaded model of one site (or of all): the next question loads it afresh."""
    with _lock:
        if site_id is None:
            _loaded.clear()
            _checked.clear()
        else:
            _loaded.pop(site_id, None)
            _checked.pop(site_id, None)


def announce(site_id: int) -> None:
    """Tell every process that the site's active version changed."""
    forget(site_id)
    url = _redis_url()
    if url is None:
        return  # embedded defaults: this is the only process
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        client.publish(_channel(), str(site_id))
        client.close()
    except redis.RedisError:
        # The version check picks the change up within nlp.version_check_seconds anyway.
        logger.warning("nlp.announce_failed", extra={"site": site_id}, exc_info=True)


# Set once the listener has subscribed; the first question waits for it (a moment), so that
# an activation right after start-up is not missed by a process that has just loaded.
_subscribed = threading.Event()
SUBSCRIBE_WAIT_SECONDS = 2.0


def _listen(url: str) -> None:
    import redis

    while True:
        try:
            client = redis.Redis.from_url(url, socket_timeout=None)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(_channel())
            pubsub.get_message(timeout=SUBSCRIBE_WAIT_SECONDS)  # the subscription's confirmation
            _subscribed.set()
            for message in pubsub.listen():
                data = message.get("data")
                if isinstance(data, bytes) and data.isdigit():
                    forget(int(data))
        except redis.RedisError:
            logger.info("nlp.listener_reconnecting", exc_info=True)
            # Anything announced meanwhile is missed: forget all, the check reloads as needed.
            forget()
            time.sleep(1.0)


def _ensure_listener() -> None:
    global _listener
    url = _redis_url()
    if url is None or _listener is not None:
        return
    with _lock:
        if _listener is None:
            _listener = threading.Thread(
                target=_listen, args=(url,), name="gofly-nlp-versions", daemon=True
            )
            _listener.start()
    _subscribed.wait(SUBSCRIBE_WAIT_SECONDS)


def active_model(site_id: int) -> Loaded | None:
    """The site's active model, loading or reloading it when the active version changed."""
    from nlp.models import ModelVersion

    _ensure_listener()
    now = time.monotonic()
    interval = float(settings.GOFLY["nlp"]["version_check_seconds"])
    with _lock:
        loaded = _loaded.get(site_id)
        if loaded is not None and now - _checked.get(site_id, 0.0) < interval:
            return loaded
    row = (
        ModelVersion.objects.filter(site_id=site_id, state=ModelVersion.State.ACTIVE)
        .values_list("pk", "number")
        .first()
    )
    if row is None:
        forget(site_id)
        return None
    if loaded is None or loaded.version_id != row[0]:
        artifact = ModelVersion.objects.values_list("artifact", flat=True).get(pk=row[0])
        loaded = Loaded(row[0], row[1], IntentModel.loads(bytes(artifact)))
        logger.info("nlp.model_loaded", extra={"site": site_id, "version": row[1]})
    with _lock:
        _loaded[site_id] = loaded
        _checked[site_id] = now
    return loaded
