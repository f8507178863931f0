"""Uploads: type from content, limits, sending as a message, and who may download."""

from __future__ import annotations

import struct
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from chat import actions
from chat.models import Upload
from tests.conftest import make_agent, new_visitor_session

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def upload_as_visitor(token: str, name: str, content: bytes, claimed: str = "image/png"):
    file = SimpleUploadedFile(name, content, content_type=claimed)
    return Client().post(
        "/api/widget/v1/uploads", {"file": file}, HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def test_visitor_uploads_image_sends_it_and_agent_downloads_it(site, agent_alice):
    session = new_visitor_session(site)
    response = upload_as_visitor(session.token, "../../etc/photo.PNG", tiny_png())
    assert response.status_code == 201
    upload = response.json()
    assert (upload["name"], upload["content_type"], upload["size"]) == (
        "photo.png",
        "image/png",
        len(tiny_png()),
    )
    stored = Upload.objects.get(pk=upload["id"])
    assert stored.file.name.endswith(f"{upload['id']}.png")  # never the visitor's file name

    posted = actions.post_visitor_message(
        session.visitor.pk, client_id="img-1", body="", upload_id=upload["id"]
    )
    assert posted.frame["content_type"] == "image"
    assert posted.frame["attachment"] == upload

    agent = Client()
    agent.force_login(agent_alice.user)
    download = agent.get(upload["url"])
    assert download.status_code == 200
    assert download["Content-Type"] == "image/png"
    assert download["X-Content-Type-Options"] == "nosniff"
    assert b"".join(download.streaming_content) == tiny_png()
    # The visitor reaches it with its token in the URL, as an <img> must.
    assert Client().get(f"{upload['url']}?token={session.token}").status_code == 200


def test_file_type_is_decided_by_content_not_name(site):
    session = new_visitor_session(site)
    response = upload_as_visitor(
        session.token, "invoice.pdf", b"MZ\x90\x00\x03" + bytes(300), claimed="application/pdf"
    )
    assert response.status_code == 415
    assert response.json() == {
        "code": "unsupported_type",
        "detail": "This kind of file is not accepted; send one of: image/png, image/jpeg, "
        "image/gif, image/webp, application/pdf, text/plain.",
    }
    assert Upload.objects.count() == 0


def test_text_upload_is_named_for_what_it_is(site):
    session = new_visitor_session(site)
    response = upload_as_visitor(
        session.token, "notes.exe", "订单号 1234\n".encode(), claimed="application/x-msdownload"
    )
    assert response.status_code == 201
    assert response.json()["name"] == "notes.txt"
    assert response.json()["content_type"] == "text/plain"


def test_upload_over_the_size_limit_is_refused(site, settings):
    settings.GOFLY["uploads"] = {**settings.GOFLY["uploads"], "max_bytes": 100}
    session = new_visitor_session(site)
    response = upload_as_visitor(session.token, "big.txt", b"a" * 101)
    assert response.status_code == 413
    assert response.json() == {"code": "too_large", "detail": "The file is larger than 100 bytes."}
    assert Upload.objects.count() == 0


def test_upload_without_token_or_file_is_refused(site):
    session = new_visitor_session(site)
    no_token = Client().post("/api/widget/v1/uploads", {"file": SimpleUploadedFile("a.txt", b"hi")})
    no_file = Client().post(
        "/api/widget/v1/uploads", {}, HTTP_AUTHORIZATION=f"Bearer {session.token}"
    )
    assert no_token.status_code == 401
    assert no_token.json() == {
        "code": "unauthenticated",
        "detail": "The visitor token is missing or expired; start a new session.",
    }
    assert no_file.status_code == 400
    assert no_file.json() == {
        "code": "invalid",
        "detail": "Attach the file in the form field 'file'.",
    }


def test_other_visitors_and_other_sites_cannot_download(site, other_site):
    owner = new_visitor_session(site)
    upload = upload_as_visitor(owner.token, "a.png", tiny_png()).json()
    actions.post_visitor_message(owner.visitor.pk, client_id="f", body="", upload_id=upload["id"])
    stranger = new_visitor_session(site)
    outsider = make_agent("olga", other_site)
    agent = Client()
    agent.force_login(outsider.user)

    for response in (
        Client().get(f"{upload['url']}?token={stranger.token}"),
        Client().get(upload["url"]),
        agent.get(upload["url"]),
    ):
        assert response.status_code == 404
        assert response.json() == {
            "code": "not_found",
            "detail": "That file does not exist or you cannot see it.",
        }


def test_visitor_cannot_send_someone_elses_upload(site):
    owner = new_visitor_session(site)
    upload = upload_as_visitor(owner.token, "a.png", tiny_png()).json()
    thief = new_visitor_session(site)
    with pytest.raises(actions.GoflyError) as error:
        actions.post_visitor_message(
            thief.visitor.pk, client_id="x", body="", upload_id=upload["id"]
        )
    assert error.value.as_dict() == {
        "code": "not_found",
        "detail": "That upload does not exist or is not yours.",
    }


def test_agent_uploads_into_a_conversation_and_visitor_downloads(site, agent_alice):
    session = new_visitor_session(site)
    posted = actions.post_visitor_message(
        session.visitor.pk, client_id="c", body="send the invoice"
    )
    agent = Client(enforce_csrf_checks=True)
    agent.force_login(agent_alice.user)
    agent.get("/dashboard/")  # sets the csrftoken cookie, as the dashboard page does
    csrf = agent.cookies["csrftoken"].value
    pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

    refused = agent.post(
        "/api/agent/v1/uploads",
        {"file": SimpleUploadedFile("i.pdf", pdf), "conversation": posted.conversation_id},
    )
    response = agent.post(
        "/api/agent/v1/uploads",
        {"file": SimpleUploadedFile("invoice.pdf", pdf), "conversation": posted.conversation_id},
        HTTP_X_CSRFTOKEN=csrf,
    )

    assert refused.status_code == 403  # no CSRF token: a foreign page cannot upload as the agent
    assert response.status_code == 201
    upload = response.json()
    reply = actions.post_agent_message(
        agent_alice.user,
        posted.conversation_id,
        client_id="r",
        body="here it is",
        upload_id=upload["id"],
    )
    assert reply.frame["content_type"] == "file"
    download = Client().get(f"{upload['url']}?token={session.token}")
    assert download.status_code == 200
    assert download["Content-Disposition"] == 'attachment; filename="invoice.pdf"'


def test_upload_refusal_is_translated(site):
    session = new_visitor_session(site)
    file = SimpleUploadedFile("x.bin", b"\x00\x01\x02" * 10)
    response = Client().post(
        "/api/widget/v1/uploads",
        {"file": file},
        HTTP_AUTHORIZATION=f"Bearer {session.token}",
        HTTP_ACCEPT_LANGUAGE="zh-hans",
    )
    assert response.status_code == 415
    assert response.json()["detail"].startswith("不接受此类文件；请发送以下类型之一：")
