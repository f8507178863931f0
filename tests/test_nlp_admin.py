"""Training data in and versions out: the import (file, command, admin upload), the training
request that runs in the background, and the admin's activate and roll-back actions."""

from __future__ import annotations

import io
import json
import os
import time
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import transaction

from nlp import importing, training
from nlp.models import Example, Intent, ModelVersion
from nlp.tasks import train_version
from tests.conftest import require_redis
from tests.test_nlp import TINY
from tests.test_webhooks import Worker, _database_url_for_workers, _forget_queue

pytestmark = pytest.mark.django_db

CSV_WITH_BAD_ROWS = (
    "text,intent,language\n"
    "where has my refund gone,refund.status,\n"  # row 2: taken
    ",refund.status,en\n"  # 3: empty
    "my money back please,,en\n"  # 4: no intent
    "refund please,Refund Status,en\n"  # 5: bad name
    "rembourser,refund.request,fr\n"  # 6: bad language
    "when are you open,hours,en\n"  # 7: unknown intent
    "WHERE HAS  my refund gone,refund.status,en\n"  # 8: same as row 2
    "where has my refund gone,refund.request,en\n"  # 9: row 2 gave it another intent
    "I want my money back,refund.request,en\n"  # 10: already an example
    "track my shipment,refund.request,en\n"  # 11: already an example of shipping
    f"{'x' * 501},refund.request,en\n"  # 12: too long
    "退款什么时候到账,refund.status,\n"  # 13: taken, language guessed
)


def add_intents(site, spec=TINY) -> None:
    for name, examples in spec.items():
        intent = Intent.objects.create(site=site, name=name, reply_en=f"About {name}.")
        Example.objects.bulk_create(Example(intent=intent, text=text) for text in examples)


def test_import_takes_good_rows_and_refuses_each_bad_one_with_its_reason(site):
    add_intents(site)
    before = Example.objects.count()
    report = importing.import_examples(site, CSV_WITH_BAD_ROWS.encode(), "examples.csv")
    assert (report.rows, report.taken) == (12, 2)
    assert [error.as_dict() for error in report.refused] == [
        {"row": 3, "code": "empty_text", "message": "The question is empty."},
        {"row": 4, "code": "no_intent", "message": "No intent is given."},
        {
            "row": 5,
            "code": "bad_intent_name",
            "message": "“Refund Status” is not an intent name; use lowercase words joined by "
            "dots, e.g. refund.status.",
        },
        {
            "row": 6,
            "code": "bad_language",
            "message": "“fr” is not a supported language; use en or zh.",
        },
        {
            "row": 7,
            "code": "unknown_intent",
            "message": "The site has no intent “hours”; add it in admin first, or import with "
            "missing intents created.",
        },
        {"row": 8, "code": "duplicate", "message": "Row 2 already has this question."},
        {
            "row": 9,
            "code": "conflict",
            "message": "Row 2 gives this question another intent, “refund.status”.",
        },
        {
            "row": 10,
            "code": "duplicate",
            "message": "This question is already an example of “refund.request”.",
        },
        {
            "row": 11,
            "code": "conflict",
            "message": "This question is already an example of another intent, “shipping”.",
        },
        {
            "row": 12,
            "code": "text_too_long",
            "message": "The question has 501 characters; at most 500 are allowed.",
        },
    ]
    assert Example.objects.count() == before + 2
    chinese = Example.objects.get(text="退款什么时候到账")
    assert (chinese.intent.name, chinese.language, chinese.source) == (
        "refund.status",
        "zh",
        "import",
    )


def test_import_json_can_create_the_intents_it_names(site):
    rows = [
        {"question": "when are you open", "intent": "hours"},
        {"question": "你们几点开门", "intent": "hours", "language": "zh"},
        "not an object",
    ]
    report = importing.import_examples(
        site, json.dumps({"examples": rows}).encode(), "x.json", create_intents=True
    )
    assert (report.taken, report.created_intents) == (2, ["hours"])
    assert [e.as_dict() for e in report.refused] == [
        {
            "row": 3,
            "code": "not_an_object",
            "message": "The row is not an object with text and intent.",
        }  # fmt: skip
    ]
    assert Intent.objects.get(site=site, name="hours").examples.count() == 2


@pytest.mark.parametrize(
    ("data", "name", "code", "message"),
    [
        (b"\xff\xfe\x00t", "a.csv", "not_utf8",
         "The file is not UTF-8 text; save it as UTF-8 and upload it again."),
        (b"[{\"text\": ", "a.json", "malformed",
         "The file is not valid JSON: Expecting value at line 1."),
        (b"{\"rows\": []}", "a.json", "malformed",
         "The JSON file must hold a list of examples, or an object with \u201cexamples\u201d."),
        (b"question;intent\nhi;greeting\n", "a.csv", "missing_column",
         "The CSV file needs a header row with a \u201ctext\u201d (or \u201cquestion\u201d) column "
         "and an \u201cintent\u201d column."),
    ],
)  # fmt: skip
def test_an_unreadable_file_is_refused_whole_and_stores_nothing(site, data, name, code, message):
    add_intents(site)
    before = Example.objects.count()
    with pytest.raises(importing.ImportRefused) as refused:
        importing.import_examples(site, data, name)
    assert (refused.value.code, refused.value.message) == (code, message)
    assert Example.objects.count() == before


def test_import_command_prints_the_report(site, tmp_path):
    add_intents(site)
    path = tmp_path / "examples.csv"
    path.write_text("text,intent\nrefund where,refund.status\n,shipping\n", encoding="utf-8")
    out = io.StringIO()
    call_command("gofly_bot", "import", str(path), "--site", site.key, stdout=out)
    assert out.getvalue().splitlines() == [
        "2 rows read: 1 taken, 1 refused.",
        "row 3: empty_text: The question is empty.",
    ]
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(CommandError) as refused:
        call_command("gofly_bot", "import", str(bad), "--site", site.key)
    assert str(refused.value) == (
        "Nothing was imported (malformed): The file is not valid JSON: "
        "Expecting property name enclosed in double quotes at line 1."
    )


@pytest.fixture
def admin_client_logged_in(client, db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    client.force_login(user)
    return client


def test_admin_upload_shows_the_report_row_by_row(site, admin_client_logged_in):
    add_intents(site)
    page = admin_client_logged_in.get("/admin/nlp/intent/")
    assert b'href="/admin/nlp/intent/import/"' in page.content
    upload = SimpleUploadedFile("examples.csv", CSV_WITH_BAD_ROWS.encode(), "text/csv")
    response = admin_client_logged_in.post(
        "/admin/nlp/intent/import/", {"site": site.pk, "file": upload}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-taken="2" data-refused="10"' in html
    assert "12 rows read: 2 taken, 10 refused." in html
    assert "<td>7</td><td><code>unknown_intent</code></td>" in html
    unreadable = SimpleUploadedFile("x.json", b"{", "application/json")
    response = admin_client_logged_in.post(
        "/admin/nlp/intent/import/", {"site": site.pk, "file": unreadable}
    )
    assert 'data-code="malformed"' in response.content.decode()


def test_admin_activates_a_rejected_version_and_rolls_back(site, admin_client_logged_in):
    add_intents(site)
    first = training.train_site(site.pk)
    ModelVersion.objects.filter(pk=first.pk).update(metrics={**first.metrics, "macro_f1": 1.01})
    second = training.train_site(site.pk)
    assert second.state == "rejected"
    detail = admin_client_logged_in.get(f"/admin/nlp/modelversion/{second.pk}/change/")
    assert "Most confused:" in detail.content.decode()
    changelist = "/admin/nlp/modelversion/"
    admin_client_logged_in.post(changelist, {"action": "activate", "_selected_action": [second.pk]})
    second.refresh_from_db()
    assert (second.state, second.forced, second.note) == ("active", True, "activated in admin")
    admin_client_logged_in.post(
        changelist, {"action": "roll_back", "_selected_action": [second.pk]}
    )
    assert ModelVersion.objects.get(site=site, state="active").number == 1


def test_a_training_task_run_twice_trains_its_version_once(site):
    add_intents(site)
    requested = training._new_version(site.pk, "lexical")
    assert train_version(requested.pk) == "active"  # the task body, as a worker runs it
    trained = ModelVersion.objects.get(pk=requested.pk)
    # Run again, as after a worker died before acknowledging: nothing changes.
    assert train_version(requested.pk) == "active"
    again = ModelVersion.objects.get(pk=requested.pk)
    assert again.activated_at == trained.activated_at
    assert ModelVersion.objects.filter(site=site).count() == 1


def wait_for_state(version_id: int, seconds: float = 90) -> ModelVersion:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        version = ModelVersion.objects.get(pk=version_id)
        if version.state not in ("training", "ready"):  # ready: trained, not yet judged
            return version
        time.sleep(0.1)
    raise AssertionError(f"version {version_id} is still {version.state} after {seconds} s")


def test_the_embedded_server_fails_a_training_its_last_stop_cut_off(site):
    add_intents(site)
    cut_off = training._new_version(site.pk, "lexical")
    assert training.fail_interrupted() == 1
    cut_off.refresh_from_db()
    assert (cut_off.state, cut_off.note) == (
        "failed",
        "The server stopped during the training; train again.",
    )
    assert training.fail_interrupted() == 0


@pytest.mark.django_db(transaction=True)
def test_admin_train_action_trains_in_the_background_on_embedded_defaults(site, client, settings):
    settings.CELERY_BROKER_URL = "memory://"  # as on embedded defaults, whatever this run has
    add_intents(site)
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root")
    client.force_login(user)
    from nlp.models import BotSettings

    settings_row = BotSettings.objects.create(site=site)
    response = client.post(
        "/admin/nlp/botsettings/",
        {"action": "train_now", "_selected_action": [settings_row.pk]},
        follow=True,
    )
    assert "Training started: Shop v1." in response.content.decode()
    version = wait_for_state(ModelVersion.objects.get(site=site, number=1).pk)
    assert version.state == "active", version.note
    assert version.metrics["macro_f1"] is not None


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_trains_a_requested_version(site, settings, tmp_path):
    redis_url = require_redis()
    assert settings.CELERY_BROKER_URL.startswith("redis"), settings.CELERY_BROKER_URL
    queue = "gofly-test-training-" + uuid.uuid4().hex[:8]
    settings.GOFLY = {
        **settings.GOFLY,
        "celery": {**settings.GOFLY["celery"], "training_queue": queue},
    }
    add_intents(site)
    env = {
        **os.environ,
        "DATABASE_URL": _database_url_for_workers(),
        "REDIS_URL": redis_url,
        "GOFLY_DATA_DIR": str(tmp_path),
    }
    worker = Worker(env, queue, tmp_path / "worker.log")
    try:
        with transaction.atomic():
            requested = training.request_training(site.pk)
        assert requested.state == "training"
        version = wait_for_state(requested.pk)
        worker.check_alive()
    finally:
        worker.stop()
        _forget_queue(redis_url, queue)
    assert version.state == "active", version.note
    assert version.metrics["test_examples"] == 4
    assert "nlp.tasks.train_version" in (tmp_path / "worker.log").read_text()
