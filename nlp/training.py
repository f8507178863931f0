"""Training a site's bot: a new model version, measured, kept, and activated only if not worse.

A run splits the site's examples (a fixed seed, 20% of each intent held out), trains on the
rest and measures on the held-out part; then it trains again on every example, and that model
is what the version serves: the held-out figures estimate it. The new version becomes active
when no version is, when an admin forces it, or when its macro-F1 is at least the active one's
minus `nlp.activation_tolerance`; otherwise it is kept as rejected, with the reason.

Activation is one transaction (the old active version becomes retired), then a broadcast
tells every process to load the new model (`nlp.runtime`).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Max
from django.utils import timezone

from chat.models import Site
from nlp import runtime
from nlp.classifier import IntentModel
from nlp.encoders import resolve
from nlp.evaluation import split, train_and_measure
from nlp.models import BotSettings, Example, ModelVersion

logger = logging.getLogger(__name__)

SPLIT_SEED = 0
TEST_SHARE = 0.2


class ActivationRefused(Exception):
    """The version cannot serve (it has no model, or belongs to another site)."""


def encoder_for(site_id: int) -> str:
    """The encoder the site's next version trains with (never `auto`: that is resolved)."""
    chosen = BotSettings.objects.filter(site_id=site_id).values_list("encoder", flat=True).first()
    return resolve(chosen or settings.GOFLY["nlp"]["encoder"])


def site_examples(site_id: int) -> tuple[list[str], list[str]]:
    """Texts and intent names of the site's active intents, in a stable order."""
    rows = (
        Example.objects.filter(intent__site_id=site_id, intent__active=True)
        .order_by("intent__name", "id")
        .values_list("text", "intent__name")
    )
    texts = [text for text, _ in rows]
    labels = [name for _, name in rows]
    return texts, labels


def _new_version(site_id: int, encoder: str) -> ModelVersion:
    with transaction.atomic():
        # The site row serialises numbering between two runs started at once.
        Site.objects.select_for_update().filter(pk=site_id).first()
        last = ModelVersion.objects.filter(site_id=site_id).aggregate(n=Max("number"))["n"]
        return ModelVersion.objects.create(site_id=site_id, number=(last or 0) + 1, encoder=encoder)


def _verdict(version: ModelVersion, force: bool) -> tuple[bool, str]:
    active = ModelVersion.objects.filter(
        site_id=version.site_id, state=ModelVersion.State.ACTIVE
    ).first()
    if force:
        return True, "activated by an administrator"
    if active is None:
        return True, "no version was active"
    tolerance = float(settings.GOFLY["nlp"]["activation_tolerance"])
    new, old = version.macro_f1, active.macro_f1
    if old is None or (new is not None and new >= old - tolerance):
        return True, f"macro-F1 {new} is not worse than v{active.number}'s {old}"
    return False, f"macro-F1 {new} is below v{active.number}'s {old}"


def train_site(site_id: int, *, force: bool = False, encoder: str | None = None) -> ModelVersion:
    """Train, measure and store a new version of the site's bot, here and now."""
    version = _new_version(site_id, resolve(encoder) if encoder else encoder_for(site_id))
    return train_version(version.pk, force=force)


def request_training(
    site_id: int, *, force: bool = False, encoder: str | None = None
) -> ModelVersion:
    """A new version in state `training`, trained in the background once this commits.

    With a Celery broker the task `nlp.tasks.train_version` runs it on a worker; on embedded
    defaults a thread of this process does.
    """
    version = _new_version(site_id, resolve(encoder) if encoder else encoder_for(site_id))
    version_id = version.pk
    transaction.on_commit(lambda: _dispatch(version_id, force))
    return version


def _dispatch(version_id: int, force: bool) -> None:
    if str(settings.CELERY_BROKER_URL).startswith("memory://"):
        _training_pool().submit(_train_in_thread, version_id, force)
        return
    from nlp.tasks import train_version  # here: nlp.tasks imports this module

    queue = settings.GOFLY["celery"]["training_queue"]
    options = {"queue": queue} if queue else {}
    try:
        train_version.apply_async((version_id,), {"force": force}, retry=False, **options)
    except Exception as exc:
        # The broker is down: say so on the version rather than leave it training for good.
        logger.warning("nlp.training_not_queued", extra={"version": version_id}, exc_info=True)
        ModelVersion.objects.filter(pk=version_id, state=ModelVersion.State.TRAINING).update(
            state=ModelVersion.State.FAILED,
            note=f"Could not queue the training ({type(exc).__name__}); train again.",
        )


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _training_pool() -> ThreadPoolExecutor:
    # One thread: two trainings at once would only share the same cores.
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="gofly-training")
        return _pool


def _train_in_thread(version_id: int, force: bool) -> None:
    try:
        train_version(version_id, force=force)
    except Exception:
        logger.exception("nlp.training_crashed", extra={"version": version_id})
    finally:
        connections.close_all()


def fail_interrupted() -> int:
    """Mark versions still `training` as failed; for the embedded server as it starts.

    On embedded defaults the server's own thread trains, so a version still training when the
    server starts was cut off by its last stop, and nothing would ever finish it. (With Celery
    the task comes back to a worker instead: late acknowledgement.)
    """
    count = ModelVersion.objects.filter(state=ModelVersion.State.TRAINING).update(
        state=ModelVersion.State.FAILED, note="The server stopped during the training; train again."
    )
    if count:
        logger.warning("nlp.training_interrupted", extra={"versions": count})
    return count


def train_version(version_id: int, *, force: bool = False) -> ModelVersion:
    """Train a version that is in state `training`; any other state is left as it is.

    So a task run again after its worker died trains the same row again, and a run that
    finds the row finished does nothing: one request, one version.
    """
    version = ModelVersion.objects.get(pk=version_id)
    if version.state != ModelVersion.State.TRAINING:
        return version
    site_id, encoder = version.site_id, version.encoder
    started = time.perf_counter()
    try:
        texts, labels = site_examples(site_id)
        train_x, train_y, test_x, test_y = split(texts, labels, TEST_SHARE, SPLIT_SEED)
        _, metrics = train_and_measure(encoder, train_x, train_y, test_x, test_y)
        model = IntentModel(encoder).fit(texts, labels)
        artifact = model.dumps()
    except Exception as exc:
        version.state = ModelVersion.State.FAILED
        version.note = f"{type(exc).__name__}: {exc}"
        version.save(update_fields=["state", "note"])
        logger.warning("nlp.training_failed", extra={"site": site_id, "version": version.pk})
        return version
    version.metrics = metrics
    version.examples = len(texts)
    version.intents = len(set(labels))
    version.train_seconds = round(time.perf_counter() - started, 2)
    version.artifact = artifact
    version.artifact_bytes = len(artifact)
    version.state = ModelVersion.State.READY
    version.save()
    activate, reason = _verdict(version, force)
    if activate:
        activate_version(version.pk, forced=force, reason=reason)
    else:
        ModelVersion.objects.filter(pk=version.pk).update(
            state=ModelVersion.State.REJECTED, note=reason
        )
    version.refresh_from_db()
    logger.info(
        "nlp.trained",
        extra={
            "site": site_id,
            "version": version.number,
            "state": version.state,
            "accuracy": metrics.get("accuracy"),
            "macro_f1": metrics.get("macro_f1"),
            "seconds": version.train_seconds,
        },
    )
    return version


def activate_version(version_id: int, *, forced: bool = True, reason: str = "") -> ModelVersion:
    """Make a version the site's active one; the one active before is retired."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version_id)
        if not version.artifact_bytes:
            raise ActivationRefused(f"v{version.number} has no trained model; train again.")
        ModelVersion.objects.filter(
            site_id=version.site_id, state=ModelVersion.State.ACTIVE
        ).exclude(pk=version.pk).update(state=ModelVersion.State.RETIRED)
        version.state = ModelVersion.State.ACTIVE
        version.forced = forced
        version.activated_at = timezone.now()
        version.note = reason or version.note
        version.save(update_fields=["state", "forced", "activated_at", "note"])
        site_id = version.site_id
        transaction.on_commit(lambda: runtime.announce(site_id))
    logger.info("nlp.activated", extra={"site": site_id, "version": version.number})
    return version


def roll_back(site_id: int) -> ModelVersion:
    """Serve the version that served before the active one again."""
    active = ModelVersion.objects.filter(site_id=site_id, state=ModelVersion.State.ACTIVE).first()
    earlier = ModelVersion.objects.filter(
        site_id=site_id, state=ModelVersion.State.RETIRED, activated_at__isnull=False
    )
    if active is not None:
        earlier = earlier.filter(number__lt=active.number)
    previous = earlier.order_by("-activated_at").first()
    if previous is None:
        raise ActivationRefused("No earlier version served this site; nothing to roll back to.")
    reason = f"rolled back from v{active.number}" if active else "rolled back"
    return activate_version(previous.pk, forced=True, reason=reason)


def summary(version: ModelVersion) -> dict[str, Any]:
    metrics = version.metrics or {}
    return {
        "version": version.number,
        "state": version.state,
        "encoder": version.encoder,
        "accuracy": metrics.get("accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "examples": version.examples,
        "intents": version.intents,
        "train_seconds": version.train_seconds,
        "note": version.note,
    }
