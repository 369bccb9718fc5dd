"""Text that came from outside, made fit for our messages: API keys removed, sentences joined once.

Every error message in the provider that quotes a server (or a proxy, or a socket error) passes
through :func:`redact` and is joined with :func:`sentences`, so no key reaches a log and no
message ends in "..". The small helpers here trim such text to a clause or a snippet.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

#: How much of a server's error text we keep: enough to act on, never a whole HTML page.
MAX_ERROR_TEXT: Final = 500


_KEY_SHAPE = re.compile(r"SG_[0-9A-Za-z]{8,}")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove API keys from text that came from outside (server error bodies, exception reprs).

    Known secrets are replaced verbatim, and anything shaped like a Segmind key (``SG_`` + hex)
    is replaced too, so a key echoed back by a proxy cannot reach a log or an exception.
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEY_SHAPE.sub("***", text)


def sentences(*parts: str | None) -> str:
    """Join message parts into sentences, each ending in exactly one full stop.

    Server texts often end in a full stop already ("... to continue."); appending ". Top up" to
    them gave "continue.. Top up". Every message that joins a server text or another message to
    more text goes through here, so no part is terminated twice. Empty parts are skipped; a part
    that already ends in ``.``, ``!`` or ``?`` (a server's own ellipsis included) is kept as is.
    """
    out: list[str] = []
    for part in parts:
        text = (part or "").strip()
        if not text:
            continue
        out.append(text if text[-1] in ".!?" else text + ".")
    return " ".join(out)


def clause(text: str | None) -> str:
    """A server text to embed after a colon: without the full stop(s) our own join will add."""
    return (text or "").strip().rstrip(".").rstrip()


def snippet(body: bytes, limit: int = 120) -> str:
    """The start of a body as one line of text, for an error message about an unexpected answer."""
    text = body[:limit].decode("utf-8", "replace")
    return re.sub(r"\s+", " ", text).strip()


def quoted_list(values: Iterable[str]) -> str:
    """``'a', 'b', 'c'``: the allowed values in an error message."""
    return ", ".join(repr(v) for v in values)
