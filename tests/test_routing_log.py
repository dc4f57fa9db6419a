"""Spec: an accepted event that no subscription matches is said so in the worker's log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hub.routing import route_events
from hub.settings import load_settings
from hub.store import events as stored_events
from hub.store.db import migrate, session
from hub.store.models import Event
from hub.templates import Templates


def test_an_event_nobody_hears_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(
        'bundled = {subscriptions = false}\n[events."order.shipped"]\ndescription = "x"\n'
    )
    settings = load_settings(settings_file)
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    migrate(url)
    with session(url) as db:
        stored_events.add_event(db, Event(id="evt_nobody", type="order.shipped", data={}))

    with caplog.at_level(logging.WARNING), session(url) as db:
        routed = route_events(db, settings, Templates(), ["evt_nobody"])

    assert routed.queued == []
    assert "event evt_nobody (order.shipped) matches no subscription" in caplog.text
