"""Per-tenant YAML action catalogs: validation, the built-in airline catalog, live reload."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from memcrm.core.errors import ConfigError
from memcrm.core.tenants import tenant_file_name
from memcrm.core.types import Channel
from memcrm.decisions.catalog import BUILTIN_CATALOG, catalog_fingerprint
from memcrm.decisions.contact import ContactCap, Suppression
from memcrm.decisions.policy import BASE_SCHEMA, Type
from memcrm.decisions.tenant_catalog import (
    ContextWeight,
    RuleKind,
    TenantCatalog,
    TenantCatalogs,
    builtin_catalog,
    parse_catalog,
)

DAY = timedelta(days=1)

ACME = """
version: 7
marketing_consent: opt_in
attributes:
  tier: string
  loyalty.years: number
contact:
  - {max: 3, within: 7d}
context_weights:
  - {channel: voice, actions: [callback], weight: 1.5}
  - {intent: card_lost, weight: 2.0}
  - {channel: voice, intent: card_lost, actions: [callback, card_upsell], weight: 0.5}
actions:
  - id: callback
    title: "  Call   the customer back "
    description: >-
      A senior agent calls the customer
      back within the hour.
    channels: [voice, chat]
    value: 2
    eligibility:
      - "profile.interaction_count >= 1"
    applicability:
      - "count(profile.open_issues) > 0"
      - "not (context.channel == 'voice' and profile.no_calls)"
    suitability:
      - "attribute.tier != 'blocked'"
    contact:
      - {channel: voice, max: 1, within: 1d}
    suppress: {after_rejections: 1, for: 14d}
  - id: card_upsell
    title: Offer the premium card
    description: A card with travel insurance.
    channels: [email, web]
    value: 4.5
    lever: 0.8
    marketing: true
    suppress: {after_rejections: 2, within: 90d, for: 30d}
"""


def write(directory: Path, tenant: str, text: str) -> Path:
    path = directory / tenant_file_name(tenant)
    path.write_text(text, encoding="utf-8")
    return path


def minimal(version: str | int, action: str = "a") -> str:
    return (
        f"version: {version}\n"
        f"actions:\n"
        f"  - {{id: {action}, title: T, description: D, channels: [email], value: 1}}\n"
    )


# ---------------------------------------------------------------------------------------------
# The built-in catalog


def test_the_builtin_yaml_catalog_equals_the_catalog_the_model_was_trained_on() -> None:
    catalog = builtin_catalog()
    # Ids, titles, descriptions, channels, values and order: Action equality covers them all.
    assert catalog.model_actions == BUILTIN_CATALOG
    assert catalog.fingerprint == catalog_fingerprint(BUILTIN_CATALOG)
    assert catalog.version == "airline-1"
    assert catalog.source.endswith("catalogs/airline.yaml")
    assert catalog.schema == BASE_SCHEMA


def test_the_builtin_policies() -> None:
    catalog = builtin_catalog()
    assert [s.action_id for s in catalog.actions if s.marketing] == ["seat_upgrade_offer"]
    assert all(s.lever == 1.0 for s in catalog.actions)
    assert all(s.suppress is not None and s.contact for s in catalog.actions)
    upsell = catalog.action("seat_upgrade_offer")
    assert [(r.kind, r.rule.text) for r in upsell.rules] == [
        (RuleKind.SUITABILITY, "count(profile.open_issues) == 0"),
        (RuleKind.SUITABILITY, "not any(memory.sentiment, 'negative', 7d)"),
    ]
    assert catalog.context_weights == () and catalog.contact == ()
    assert catalog.marketing_consent == "opt_out"


# ---------------------------------------------------------------------------------------------
# A full file


def test_a_full_catalog() -> None:
    catalog = parse_catalog(ACME, "acme.yaml")
    assert catalog.version == "7" and catalog.source == "acme.yaml"
    assert catalog.action_ids == ("callback", "card_upsell")
    assert catalog.marketing_consent == "opt_in"
    assert catalog.schema.attributes == {"tier": Type.STRING, "loyalty.years": Type.NUMBER}
    assert catalog.contact == (ContactCap(3, 7 * DAY, None),)
    callback = catalog.action("callback")
    assert callback.action.title == "Call the customer back"
    assert callback.action.description == "A senior agent calls the customer back within the hour."
    assert callback.action.channels == {Channel.VOICE, Channel.CHAT}
    assert callback.action.value == 2.0 and callback.lever == 1.0 and not callback.marketing
    assert [(r.kind, r.index) for r in callback.rules] == [
        (RuleKind.ELIGIBILITY, 0),
        (RuleKind.APPLICABILITY, 0),
        (RuleKind.APPLICABILITY, 1),
        (RuleKind.SUITABILITY, 0),
    ]
    assert callback.contact == (ContactCap(1, DAY, Channel.VOICE),)
    assert callback.suppress == Suppression(1, 14 * DAY, None)
    upsell = catalog.action("card_upsell")
    assert upsell.lever == 0.8 and upsell.marketing and upsell.rules == ()
    assert upsell.suppress == Suppression(2, 30 * DAY, 90 * DAY)
    assert catalog.context_weights[0] == ContextWeight(
        1.5, Channel.VOICE, None, frozenset({"callback"})
    )
    with pytest.raises(KeyError):
        catalog.action("nope")


@pytest.mark.parametrize(
    ("action", "channel", "intent", "weight"),
    [
        ("callback", Channel.VOICE, "", 1.5),
        ("callback", Channel.VOICE, "card_lost", 1.5 * 2.0 * 0.5),  # the product of all matches
        ("card_upsell", Channel.VOICE, "card_lost", 2.0 * 0.5),
        ("card_upsell", Channel.EMAIL, "card_lost", 2.0),
        ("callback", Channel.CHAT, "other", 1.0),
        ("callback", Channel.UNSPECIFIED, "", 1.0),  # any channel matches no channel entry
    ],
)
def test_context_weights(action: str, channel: Channel, intent: str, weight: float) -> None:
    catalog = parse_catalog(ACME, "acme.yaml")
    assert catalog.context_weight(action, channel, intent) == pytest.approx(weight)


# ---------------------------------------------------------------------------------------------
# Refused files: every message names the file and the field


def _with(action_fields: str = "", top: str = "") -> str:
    return (
        f"version: 1\n{top}"
        "actions:\n"
        "  - id: a\n"
        "    title: T\n"
        "    description: D\n"
        "    channels: [email]\n"
        "    value: 1\n" + "".join(f"    {line}\n" for line in action_fields.splitlines())
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1", "actions: Field required"),
        ("actions: []", "version: Field required"),
        ("version: 1\nactions: []", "actions: must list at least one"),
        ("version: 1.5\n" + _with()[11:], "version: must be a string or an integer"),
        (_with(top="colour: blue\n"), "colour: Extra inputs are not permitted"),
        (_with("eligibilty: ['true']"), "actions[0].eligibilty: Extra inputs are not permitted"),
        (_with("lever: 0"), "actions[0].lever: Input should be greater than 0"),
        (_with("lever: true"), "actions[0].lever: Input should be a valid number"),
        (_with("marketing: 'yes'"), "actions[0].marketing: Input should be a valid boolean"),
        (_with("contact: [{channel: fax, max: 1, within: 1d}]"), "unknown channel 'fax'"),
        (_with("contact: [{max: 1, within: 7}]"), "actions[0].contact[0].within: must be a dur"),
        (_with("contact: [{max: 1, within: 1.5d}]"), "is not a duration like 30d"),
        (_with("contact: [{max: 0, within: 1d}]"), "actions[0].contact[0].max: Input should be"),
        (_with("suppress: {after_rejections: 2}"), "actions[0].suppress.for: Field required"),
        (
            _with("suppress: {after_rejections: 2, duration: 30d}"),
            "actions[0].suppress.duration: Extra inputs are not permitted",
        ),
        (_with(top="attributes: {tier: text}\n"), "attributes.tier: Input should be 'string'"),
        (_with(top="attributes: {'bad key': string}\n"), "is not a valid attribute name"),
        (_with(top="context_weights: [{weight: 2}]\n"), "give a channel, an intent or both"),
        (
            _with(top="context_weights: [{channel: sms, actions: [zzz], weight: 2}]\n"),
            "context_weights[0].actions: unknown action 'zzz'",
        ),
        (_with(top="marketing_consent: maybe\n"), "marketing_consent: Input should be 'opt_out'"),
        ("version: 1\nversion: 2\nactions: []", "duplicate key 'version'"),
        ("- just a list", "expected a mapping"),
        ("version: [unclosed", "not valid YAML"),
        (
            _with().replace("channels: [email]", "channels: [email, email]"),
            "actions[0].channels: a channel is listed twice",
        ),
        (_with().replace("channels: [email]", "channels: []"), "channels: must list at least one"),
        (_with().replace("id: a", "id: Bad-Id"), "is not a valid action id"),
        (_with().replace("value: 1", "value: -1"), "actions[0].value: Input should be greater"),
        (_with().replace("value: 1", "value: .inf"), "actions[0].value: Input should be a finite"),
    ],
)
def test_bad_files_are_refused_with_the_file_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_catalog(text, "acme.yaml")
    assert info.value.message.startswith("acme.yaml: ")
    assert expected in info.value.message


def test_duplicate_action_ids() -> None:
    text = minimal(1) + "  - {id: a, title: U, description: E, channels: [sms], value: 2}\n"
    with pytest.raises(ConfigError, match=r"actions: id 'a' is in items 0 and 1"):
        parse_catalog(text, "acme.yaml")


def test_a_bad_rule_is_refused_at_load_with_its_place_and_column() -> None:
    text = _with("applicability:\n  - 'true'\n  - 'profile.interaction_count >= '")
    with pytest.raises(ConfigError) as info:
        parse_catalog(text, "acme.yaml")
    assert info.value.message == (
        "acme.yaml: actions[0] (a).applicability[1]: at column 30 of "
        "'profile.interaction_count >= ': expected a value, a feature, a function or '(', "
        "found the end of the rule"
    )


def test_unknown_features_are_refused_at_load_and_every_bad_rule_is_reported() -> None:
    text = _with(
        "eligibility: ['profile.open_issue_count > 0']\n"
        "suitability: ['attribute.tier == \"gold\"', 'true']"
    )
    with pytest.raises(ConfigError) as info:
        parse_catalog(text, "acme.yaml")
    message = info.value.message
    assert "actions[0] (a).eligibility[0]: at column 1" in message
    assert "unknown feature 'profile.open_issue_count'" in message
    assert "actions[0] (a).suitability[0]: at column 1" in message
    assert "unknown feature 'attribute.tier'" in message
    # Declaring the attribute makes the same rule valid.
    parse_catalog(
        _with("suitability: ['attribute.tier == \"gold\"']", top="attributes: {tier: string}\n"),
        "acme.yaml",
    )


def test_titles_and_versions() -> None:
    assert parse_catalog(minimal("v2024-06"), "x").version == "v2024-06"
    assert parse_catalog(minimal(3), "x").version == "3"


# ---------------------------------------------------------------------------------------------
# A directory of catalogs


def test_tenants_without_a_file_get_the_builtin_catalog(tmp_path: Path) -> None:
    write(tmp_path, "acme", ACME)
    catalogs = TenantCatalogs.load(tmp_path)
    assert catalogs.tenants == {"acme"}
    assert catalogs.get("acme").version == "7"
    assert catalogs.get("globex") is builtin_catalog()
    assert TenantCatalogs.load(None).get("acme") is builtin_catalog()
    assert TenantCatalogs.load(None).reload() is None


def test_file_names_follow_the_tenant_rules(tmp_path: Path) -> None:
    write(tmp_path, "acme:eu/west", minimal(1))
    (tmp_path / ".hidden.yaml").write_text("not: valid", encoding="utf-8")
    (tmp_path / "README.md").write_text("ignored", encoding="utf-8")
    assert TenantCatalogs.load(tmp_path).tenants == {"acme:eu/west"}
    (tmp_path / "globex.yml").write_text(minimal(1), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"globex.yml: catalog files end in .yaml"):
        TenantCatalogs.load(tmp_path)


def test_start_up_refuses_any_bad_file(tmp_path: Path) -> None:
    write(tmp_path, "acme", ACME)
    write(tmp_path, "globex", "version: 1")
    with pytest.raises(ConfigError, match=r"globex.yaml: actions: Field required"):
        TenantCatalogs.load(tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        TenantCatalogs.load(tmp_path / "missing")


def test_reload_activates_a_new_version_without_a_restart(tmp_path: Path) -> None:
    write(tmp_path, "acme", minimal(1))
    catalogs = TenantCatalogs.load(tmp_path)
    before = catalogs.get("acme")
    write(tmp_path, "acme", minimal(2, action="b"))
    assert catalogs.reload() is None
    assert catalogs.get("acme").version == "2"
    assert catalogs.get("acme").action_ids == ("b",)
    assert before.version == "1"  # a decision holding the old catalog keeps it whole


def test_reload_keeps_the_old_catalog_when_the_new_file_is_bad(tmp_path: Path) -> None:
    write(tmp_path, "acme", minimal(1))
    write(tmp_path, "globex", minimal(1))
    catalogs = TenantCatalogs.load(tmp_path)
    old = catalogs.get("acme")
    write(tmp_path, "acme", _with("eligibility: ['profile.nope > 1']"))
    write(tmp_path, "globex", minimal(2))  # a good change beside the bad one
    write(tmp_path, "initech", "version: 1")  # a new tenant with a bad file
    error = catalogs.reload()
    assert error is not None
    assert "acme.yaml: actions[0] (a).eligibility[0]" in error.message
    assert "(kept version 1)" in error.message
    assert "initech.yaml: actions: Field required" in error.message
    assert "the tenant stays on the built-in catalog" in error.message
    assert catalogs.get("acme") is old
    assert catalogs.get("globex").version == "2"
    assert catalogs.get("initech") is builtin_catalog()
    # Fixing the file activates it on the next reload.
    write(tmp_path, "acme", minimal(3))
    assert catalogs.reload() is not None  # initech is still broken
    assert catalogs.get("acme").version == "3"


def test_reload_after_a_file_is_removed_or_the_directory_vanishes(tmp_path: Path) -> None:
    directory = tmp_path / "catalogs"
    directory.mkdir()
    path = write(directory, "acme", minimal(1))
    catalogs = TenantCatalogs.load(directory)
    path.unlink()
    assert catalogs.reload() is None
    assert catalogs.get("acme") is builtin_catalog()
    write(directory, "acme", minimal(4))
    assert catalogs.reload() is None
    for p in directory.iterdir():
        p.unlink()
    directory.rmdir()
    error = catalogs.reload()
    assert error is not None and "not a directory" in error.message
    assert catalogs.get("acme").version == "4"


def test_a_check_can_refuse_catalogs_the_model_cannot_score(tmp_path: Path) -> None:
    scorable = set(BUILTIN_CATALOG_IDS)

    def check(catalog: TenantCatalog) -> None:
        unknown = [a for a in catalog.action_ids if a not in scorable]
        if unknown:
            raise ConfigError(f"the active model cannot score {unknown}")

    write(tmp_path, "acme", minimal(1, action="apology_credit"))
    catalogs = TenantCatalogs.load(tmp_path, check=check)
    write(tmp_path, "acme", minimal(2, action="mystery"))
    error = catalogs.reload()
    assert error is not None
    assert error.message == (
        "acme.yaml: the active model cannot score ['mystery'] (kept version 1)"
    )
    assert catalogs.get("acme").version == "1"
    with pytest.raises(ConfigError, match=r"acme.yaml: the active model cannot score"):
        TenantCatalogs.load(tmp_path, check=check)


BUILTIN_CATALOG_IDS = tuple(a.action_id for a in BUILTIN_CATALOG)


def test_readers_never_see_an_older_catalog_after_a_newer_one(tmp_path: Path) -> None:
    write(tmp_path, "acme", minimal(0))
    catalogs = TenantCatalogs.load(tmp_path)
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(int(catalogs.get("acme").version))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 10):
            write(tmp_path, "acme", minimal(i))
            assert catalogs.reload() is None
    finally:
        stop.set()
        reader.join()
    assert seen and seen == sorted(seen)
    assert catalogs.get("acme").version == "9"
