"""Files sent in conversations: type from content, size limits, storage and access.

A file is uploaded over HTTP first and then sent as a message that refers to it. Its type is
decided from its first bytes, never from its name or the browser's claim, and it is stored
under a generated name.
"""

from __future__ import annotations

import logging
import os

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils.translation import gettext as _

from chat import actions
from chat.errors import ErrorCode, GoflyError
from chat.models import Conversation, Upload

logger = logging.getLogger(__name__)

# Signatures of the types gofly can accept; text/plain is recognised separately.
SIGNATURES: list[tuple[bytes, int, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"WEBP", 8, "image/webp"),
    (b"%PDF-", 0, "application/pdf"),
]
EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
}
SNIFF_BYTES = 4096


def sniff_content_type(head: bytes) -> str | None:
    """The type the content really has, or None when gofly does not recognise it."""
    for signature, offset, content_type in SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            if content_type == "image/webp" and not head.startswith(b"RIFF"):
                continue
            return content_type
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            # A multi-byte character cut at the end of the sniffed window is still text.
            if exc.start < len(head) - 3:
                return None
        return "text/plain"
    return None


def check_file(file: UploadedFile | None) -> str:
    """Refuse a missing, oversized or unaccepted file; return its real content type."""
    limits = settings.GOFLY["uploads"]
    if file is None:
        raise GoflyError(ErrorCode.INVALID, _("Attach the file in the form field 'file'."))
    if file.size > limits["max_bytes"]:
        raise GoflyError(
            ErrorCode.TOO_LARGE,
            _("The file is larger than %(limit)d bytes.") % {"limit": limits["max_bytes"]},
            status=413,
        )
    if file.size == 0:
        raise GoflyError(ErrorCode.INVALID, _("The file is empty."))
    file.seek(0)
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    content_type = sniff_content_type(head)
    if content_type is None or content_type not in limits["allowed_types"]:
        raise GoflyError(
            ErrorCode.UNSUPPORTED_TYPE,
            _("This kind of file is not accepted; send one of: %(types)s.")
            % {"types": ", ".join(limits["allowed_types"])},
            status=415,
        )
    return content_type


def _clean_name(name: str, content_type: str) -> str:
    base = os.path.basename(name or "").strip()[:200] or "file"
    root, _ext = os.path.splitext(base)
    return root + EXTENSIONS[content_type]


def store_upload(
    file: UploadedFile,
    *,
    site_id: int,
    visitor_id: int | None = None,
    agent_user_id: int | None = None,
    conversation_id: int | None = None,
) -> Upload:
    content_type = check_file(file)
    upload = Upload(
        site_id=site_id,
        visitor_id=visitor_id,
        agent_user_id=agent_user_id,
        conversation_id=conversation_id,
        original_name=_clean_name(file.name, content_type),
        content_type=content_type,
        size=file.size,
    )
    # The stored name is the upload's id: a visitor's file name never reaches the disk.
    upload.file.save(f"{upload.pk}{EXTENSIONS[content_type]}", file, save=False)
    try:
        with transaction.atomic():
            upload.save()
    except Exception:
        upload.file.delete(save=False)  # no file without its row
        raise
    logger.info(
        "upload.stored", extra={"upload": str(upload.pk), "type": content_type, "size": file.size}
    )
    return upload


def upload_for_visitor(upload_id: str, visitor_id: int) -> Upload | None:
    upload = Upload.objects.select_related("conversation").filter(pk=upload_id).first()
    if upload is None:
        return None
    if upload.visitor_id == visitor_id:
        return upload
    if upload.conversation is not None and upload.conversation.visitor_id == visitor_id:
        return upload
    return None


def upload_for_agent(upload_id: str, user: AbstractBaseUser) -> Upload | None:
    upload = Upload.objects.filter(pk=upload_id).first()
    if upload is None:
        return None
    if upload.agent_user_id == user.pk:
        return upload
    visible = actions.conversations_visible_to(user)
    if upload.conversation_id and visible.filter(pk=upload.conversation_id).exists():
        return upload
    return None


def agent_upload_conversation(user: AbstractBaseUser, conversation_id: str | None) -> Conversation:
    try:
        number = int(conversation_id or "")
    except ValueError:
        number = None
    return actions.check_agent_conversation(user, number)
