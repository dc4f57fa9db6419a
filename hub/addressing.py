"""Who an event reaches: the recipients it names, its topics' members, and their addresses.

An event that names recipients (ids, or inline ones stored at publish) or
topics is sent, by every matching subscription without a ``to`` of its own,
to each of them once. A subscription's ``to`` may also name them:
``recipient:<id>`` or ``topic:<key>``. Each recipient's address for a
channel is its ``email``, ``phone`` or ``slack``; channels without
per-person addresses (webhooks, Apprise) take the recipient's id as a label.
A recipient with no address for the channel, or who turned the channel or
the subscription's category off, gets a notification that is ``suppressed``
with its reason, so what did not happen is recorded too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from hub.store import recipients as stored
from hub.store.recipients import RecipientRow

RECIPIENT_REF = "recipient:"
TOPIC_REF = "topic:"
# The recipient field that holds each channel's address.
ADDRESS_FIELDS = {"email": "email", "sms": "phone", "slack": "slack"}
# Members read from the store at once while a topic is expanded.
MEMBER_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where one notification goes: an address, or why it is not sent."""

    address: str
    suppressed: str | None = None


def is_reference(to: str) -> bool:
    """Whether a subscription's ``to`` names stored recipients rather than an address."""
    return to.startswith((RECIPIENT_REF, TOPIC_REF))


def recipients_of(
    db: Session, recipient_ids: Iterable[str], topics: Iterable[str]
) -> list[RecipientRow]:
    """The stored recipients named by id or through a topic, each once, in that order.

    Ids that name no stored recipient are left out: there is nobody to reach.
    """
    wanted = list(dict.fromkeys(recipient_ids))
    for topic in dict.fromkeys(topics):
        after: str | None = None
        while page := stored.members(db, topic, after=after, limit=MEMBER_PAGE):
            wanted += page
            after = page[-1]
    wanted = list(dict.fromkeys(wanted))
    found = stored.recipients_by_id(db, wanted)
    return [found[rid] for rid in wanted if rid in found]


def referenced(db: Session, to: str) -> list[RecipientRow]:
    """The recipients a ``recipient:<id>`` or ``topic:<key>`` reference stands for."""
    if to.startswith(RECIPIENT_REF):
        return recipients_of(db, [to.removeprefix(RECIPIENT_REF)], [])
    return recipients_of(db, [], [to.removeprefix(TOPIC_REF)])


def delivery(recipient: RecipientRow, channel: str, category: str | None) -> Delivery:
    """Where ``channel`` reaches ``recipient``, or why it must not."""
    field = ADDRESS_FIELDS.get(channel)
    address = getattr(recipient, field) if field else recipient.id
    if not address:
        return Delivery("", f"no_address: recipient {recipient.id!r} has no {field}")
    preferences = recipient.preferences or {}
    if preferences.get("channels", {}).get(channel) is False:
        return Delivery(address, f"channel_off: recipient turned {channel} off")
    if category and preferences.get("categories", {}).get(category) is False:
        return Delivery(address, f"category_off: recipient turned {category!r} off")
    return Delivery(address)


def profile(recipient: RecipientRow) -> dict[str, object]:
    """The recipient as templates see it (``profile``)."""
    return {
        "id": recipient.id,
        "email": recipient.email,
        "phone": recipient.phone,
        "slack": recipient.slack,
        "locale": recipient.locale,
        "timezone": recipient.timezone,
        "data": recipient.data,
    }
