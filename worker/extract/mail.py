"""E-mail: RFC 822 ``.eml`` with the standard library's parser, Outlook ``.msg`` with
olefile (BSD; the common ``extract-msg`` is GPL, which the default install avoids).

Headers go to metadata and head the text (a summary should know the subject); the body
is the plain-text part, or the HTML part through the HTML extractor; attachments become
documents of their own, linked to the message."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import olefile

from docbatch.worker.extract.base import Attachment, Extracted, ExtractError, Source, version_of

HEADERS = ("subject", "from", "to", "cc", "date", "message-id")


def _assemble(
    meta: dict[str, Any], body: str, library: str, attachments: list[Attachment]
) -> Extracted:
    head = "\n".join(
        f"{k.title()}: {meta[k]}" for k in ("subject", "from", "to", "date") if meta.get(k)
    )
    text = f"{head}\n\n{body.strip()}" if head else body.strip()
    if not text.strip():
        raise ExtractError("the e-mail has no subject and no text body")
    sections = [(0, "headers")] if head else []
    if body.strip():
        sections.append((len(head) + 2 if head else 0, "body"))
    meta["attachments"] = [a.name for a in attachments]
    return Extracted(
        text, "email", library, sections=sections, metadata=meta, attachments=attachments
    )


def extract_eml(source: Source) -> Extracted:
    message = email.message_from_bytes(source.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    # message[h] parses the header on every access: once each.
    meta = {h: str(v) for h in HEADERS if (v := message[h]) is not None}
    body = ""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is not None:
        content = part.get_content()
        if part.get_content_subtype() == "html":
            from docbatch.worker.extract.web import html_text

            raw = content.encode() if isinstance(content, str) else content
            try:
                body = html_text(raw).text
            except ExtractError:
                body = ""
        else:
            body = content if isinstance(content, str) else content.decode(errors="replace")
    spool = source.members()
    attachments = []
    for i, att in enumerate(message.iter_attachments()):
        # Every attachment becomes a document, an empty one too (it fails, saying so).
        name = att.get_filename() or f"attachment-{i + 1}"
        attachments.append(spool.add(name, _payload(att)))
    return _assemble(meta, body, "python email (stdlib)", attachments)


def _payload(part: EmailMessage) -> bytes:
    """An attachment's bytes: decoded, or a forwarded message (message/rfc822) as it was
    sent (its payload is a message, not bytes)."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    inner = part.get_payload()
    if isinstance(inner, list) and len(inner) == 1 and hasattr(inner[0], "as_bytes"):
        return bytes(inner[0].as_bytes())
    return part.as_bytes()


def extract_msg(source: Source) -> Extracted:

    try:
        ole = olefile.OleFileIO(source.data)
    except OSError as exc:
        raise ExtractError(f"the Outlook .msg file is damaged ({exc})") from None

    def prop(code: str, storage: str = "") -> str | None:
        for suffix, encoding in (("001F", "utf-16-le"), ("001E", "latin-1")):
            path = f"{storage}__substg1.0_{code}{suffix}"
            if ole.exists(path):
                return ole.openstream(path).read().decode(encoding, errors="replace").rstrip("\x00")
        return None

    with ole:
        if not ole.exists("__properties_version1.0"):
            raise ExtractError("the OLE file is not an Outlook message")
        meta = {
            k: v
            for k, v in (
                ("subject", prop("0037")),
                ("from", prop("0C1F") or prop("0042")),
                ("to", prop("0E04")),
                ("cc", prop("0E03")),
            )
            if v
        }
        body = prop("1000") or ""
        attachments = []
        for entry in ole.listdir(streams=False, storages=True):
            if len(entry) == 1 and entry[0].startswith("__attach_version1.0_"):
                root = entry[0] + "/"
                name = prop("3707", root) or prop("3704", root) or entry[0]
                path = f"{root}__substg1.0_37010102"
                spool = source.members()
                if ole.exists(path):
                    attachments.append(
                        spool.add(name, ole.openstream(path), declared=ole.get_size(path))
                    )
                else:  # an embedded message or an OLE object: not read, but not dropped
                    attachments.append(
                        spool.refuse(name, "an embedded object docbatch does not read")
                    )
    return _assemble(meta, body, version_of("olefile"), attachments)
