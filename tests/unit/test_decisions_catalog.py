"""The built-in action catalog."""

from __future__ import annotations

from dataclasses import replace

from memcrm.core.types import Channel
from memcrm.decisions.catalog import BUILTIN_CATALOG, actions_for_channel, catalog_fingerprint


def test_catalog_is_well_formed() -> None:
    ids = [a.action_id for a in BUILTIN_CATALOG]
    assert len(ids) == len(set(ids)) == 6
    assert {
        "apology_credit",
        "rebooking_assist",
        "escalate_to_agent",
        "baggage_trace",
        "seat_upgrade_offer",
        "loyalty_thanks",
    } == set(ids)
    for action in BUILTIN_CATALOG:
        assert action.title and action.description
        assert action.channels and Channel.UNSPECIFIED not in action.channels
        assert 1.0 <= action.value <= 5.0


def test_unspecified_channel_accepts_every_action() -> None:
    assert actions_for_channel(BUILTIN_CATALOG, Channel.UNSPECIFIED) == BUILTIN_CATALOG
    purchase = actions_for_channel(BUILTIN_CATALOG, Channel.PURCHASE)
    assert [a.action_id for a in purchase] == ["seat_upgrade_offer"]


def test_fingerprint_tracks_texts_not_values() -> None:
    base = catalog_fingerprint(BUILTIN_CATALOG)
    revalued = (replace(BUILTIN_CATALOG[0], value=4.5), *BUILTIN_CATALOG[1:])
    assert catalog_fingerprint(revalued) == base
    reworded = (replace(BUILTIN_CATALOG[0], title="Say sorry"), *BUILTIN_CATALOG[1:])
    assert catalog_fingerprint(reworded) != base
