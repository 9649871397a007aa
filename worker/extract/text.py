"""Plain text and Markdown in any encoding (charset-normalizer, MIT)."""

from __future__ import annotations

from charset_normalizer import from_bytes

from docbatch.worker.extract.base import Extracted, ExtractError, Source, version_of


def decode(data: bytes) -> str:
    """``data`` as text: UTF-8 when it is, else the encoding charset-normalizer finds."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        raise ExtractError("the file is not text in any encoding we recognise")
    # Single-byte Latin code pages decode the same bytes almost equally well; where
    # windows-1252 is among the near-best guesses, take it, as browsers do (WHATWG's
    # default for Latin text), rather than a Baltic or Nordic page that scored a hair better.
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos + 0.1:
            return str(match)
    return str(best)


def extract_text(source: Source) -> Extracted:
    text = decode(source.data).replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        raise ExtractError("the file holds NUL bytes: a binary format we don't read")
    if not text.strip():
        raise ExtractError("the file holds no text")
    return Extracted(text, source.kind, version_of("charset-normalizer"))
