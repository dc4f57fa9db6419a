"""Properties: whatever a publisher sends, validation answers with an event or a clear error.

Random JSON, with every kind of text Unicode allows (NUL, lone surrogates,
RTL marks, emoji) and any nesting, is thrown at the publish path's
validation. It either yields an event to store or raises EventError whose
every error names a field, a message and a stable type; never another
exception, and never an event holding text no store can keep.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub import events
from hub.errors import EventError

TEXT = st.text(alphabet=st.characters(codec=None), max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=60,
)
USER = st.fixed_dictionaries(
    {"user_id": TEXT, "email": TEXT | st.emails(), "name": TEXT},
    optional={"phone": TEXT, "extra": JSON},
)
TYPES = st.sampled_from(["user.registered", "task.failed", "nope"]) | TEXT


def _storable(value: Any) -> bool:
    """Whether ``value`` round-trips through JSON as UTF-8 with no NUL (what every store takes)."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\\u0000" not in json.dumps(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_type=TYPES, data=USER | JSON, key=st.none() | TEXT)
def test_validation_yields_a_storable_event_or_a_clear_error(
    event_type: str, data: Any, key: str | None
) -> None:
    try:
        event, _ = events._validated(event_type, data, key or None)
    except EventError as exc:
        assert exc.errors
        for error in exc.errors:
            assert isinstance(error["loc"], list)
            assert error["msg"] and error["type"]
        return
    assert _storable([event.type, event.data, event.idempotency_key])
