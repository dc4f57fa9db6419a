"""What counts as one email address, wherever the hub reads one.

One address, never a list: a value holding several is refused whole rather
than fanned out. ``email-validator`` decides the syntax, without DNS lookups
(``check_deliverability=False``): no display names, quoted local parts, IP
literals or special-use domains such as ``localhost``, and nothing that could
break a header (CR, LF, other control characters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

# Separators people put between addresses; with a second "@", a list.
_LIST = re.compile(r"[,;\s]")


@dataclass(frozen=True, slots=True)
class EmailAddress:
    """A valid address as the hub sends to it.

    ``address`` is ASCII whenever it can be (an international domain in its
    IDNA ``xn--`` form); ``smtputf8`` says its mailbox name needs UTF-8, which
    only an SMTP server offering SMTPUTF8 accepts.
    """

    address: str
    smtputf8: bool


@lru_cache(maxsize=4096)
def email_address(text: str) -> EmailAddress:
    """``text`` as one email address; ``ValueError`` with a sentence saying why it is none.

    Cached: delivery checks the address of a message before the channel checks
    it again at its edge.
    """
    if text.count("@") > 1 and _LIST.search(text):
        raise ValueError(f"{_shown(text)} holds several addresses; a `to` names exactly one")
    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{_shown(text)} is not an email address: {exc}") from None
    return EmailAddress(valid.ascii_email or valid.normalized, valid.ascii_email is None)


def _shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a reason or a log line: escaped, and cut when long."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"
