from __future__ import annotations

import threading
from pathlib import Path

import pytest

from memcrm.core.errors import ConfigError
from memcrm.core.tenants import (
    DEFAULT_CONFIG,
    TenantConfig,
    TenantConfigs,
    parse_config,
    tenant_file_name,
    tenant_id_for_file,
)

ACME = """
version: 3
pii:
  mode: redact
  redact: [payment_card, iban, email]
intents:
  set: acme-intents
products: [Premium Checking, "  Travel   Card "]
competitors: [Globex Bank]
objections:
  - label: price
    description: The customer finds it too expensive.
    examples: ["That's way too pricey", "Fees are higher elsewhere"]
  - label: contract_lock_in
    description: The customer is tied to another provider's contract.
"""


def write(directory: Path, tenant: str, text: str) -> Path:
    path = directory / tenant_file_name(tenant)
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file(tmp_path: Path) -> None:
    write(tmp_path, "acme", ACME)
    config = TenantConfigs.load(tmp_path).get("acme")
    assert config.version == "3"
    assert config.pii.redact_types == {"payment_card", "iban", "email"}
    assert config.intents.set == "acme-intents"
    assert config.products == ("Premium Checking", "Travel Card")
    assert config.competitors == ("Globex Bank",)
    assert config.objections is not None
    assert [o.label for o in config.objections] == ["price", "contract_lock_in"]
    assert config.objections[0].examples == ("That's way too pricey", "Fees are higher elsewhere")
    assert config.objections[1].examples == ()


def test_minimal_file_gets_the_defaults(tmp_path: Path) -> None:
    write(tmp_path, "globex", "version: v2024-06")
    config = TenantConfigs.load(tmp_path).get("globex")
    assert config.version == "v2024-06"
    assert config.pii.mode == "redact"
    assert config.pii.redact_types == {"payment_card", "iban"}
    assert config.intents.set == "banking77"
    assert config.products == () and config.competitors == ()
    assert config.objections is None  # the shipped default set


def test_tenants_without_a_file_get_the_default(tmp_path: Path) -> None:
    registry = TenantConfigs.load(tmp_path)
    assert registry.get("demo") is DEFAULT_CONFIG
    assert DEFAULT_CONFIG.version == "default"
    assert TenantConfigs.load(None).get("demo") is DEFAULT_CONFIG


def test_store_as_is_and_empty_objections(tmp_path: Path) -> None:
    write(tmp_path, "t", "version: 1\npii: {mode: store_as_is}\nobjections: []")
    config = TenantConfigs.load(tmp_path).get("t")
    assert config.pii.redact_types == frozenset()
    assert config.objections == ()


def test_configs_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        DEFAULT_CONFIG.version = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\npii: {redact: [payment_card, ssn]}", "pii.redact[1]: unknown type 'ssn'"),
        ("version: 1\npii: {mode: hide}", "pii.mode: Input should be 'store_as_is' or 'redact'"),
        ("version: 1\npii: {mode: store_as_is, redact: [email]}", "pii: 'redact' lists types"),
        ("version: 1\npii: {redact: email}", "pii.redact: "),
        ("version: 1\npii: {mask: true}", "pii.mask: Extra inputs are not permitted"),
        ("version: 1\ncolour: blue", "colour: Extra inputs are not permitted"),
        ("pii: {mode: redact}", "version: Field required"),
        ("version: 1.5", "version: must be a string or an integer"),
        ("version: true", "version: must be a string or an integer"),
        ("version: ''", "version: must not be empty"),
        ("version: 1\nintents: {set: 'bank ing'}", "intents.set: 'bank ing' is not a valid"),
        ("version: 1\nproducts: [Acme, 42]", "products[1]: Input should be a valid string"),
        ("version: 1\nproducts: ['  ']", "products[0]: must not be blank"),
        ("version: 1\nproducts: [Acme]\ncompetitors: [X, acme]", "competitors: item 1 ('acme')"),
        ("version: 1\nobjections: [{label: price}]", "objections[0].description: Field required"),
        (
            "version: 1\nobjections: [{label: Price!, description: d}]",
            "objections[0].label: 'Price!' is not a valid label",
        ),
        (
            "version: 1\nobjections: [{label: p, description: d, examples: [ok, 3]}]",
            "objections[0].examples[1]: Input should be a valid string",
        ),
        (
            "version: 1\nobjections: [{label: p, description: a}, {label: p, description: b}]",
            "objections: label 'p' is in items 0 and 1",
        ),
        ("version: 1\nversion: 2", "duplicate key 'version'"),
        ("version: [1", "not valid YAML"),
        ("- version: 1", "expected a mapping"),
        ("", "expected a mapping"),
    ],
)
def test_bad_files_name_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, "good", "version: 1")
    write(tmp_path, "acme", text)
    with pytest.raises(ConfigError) as caught:
        TenantConfigs.load(tmp_path)
    assert caught.value.message.startswith("acme.yaml: ")
    assert message in caught.value.message


def test_every_error_of_a_file_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "acme", "version: 1.5\npii: {mode: hide}\nextra: 1")
    with pytest.raises(ConfigError) as caught:
        TenantConfigs.load(tmp_path)
    for field in ("version:", "pii.mode:", "extra:"):
        assert field in caught.value.message


def test_tenant_ids_with_colons_and_slashes_map_to_files(tmp_path: Path) -> None:
    assert tenant_file_name("acme:eu/west") == "acme%3Aeu%2Fwest.yaml"
    assert tenant_file_name("a.b_c-d@e") == "a.b_c-d@e.yaml"
    assert tenant_file_name(".hidden") == "%2Ehidden.yaml"
    for tenant in ("acme:eu/west", ".hidden", "x@y", "..", "a"):
        assert tenant_id_for_file(tenant_file_name(tenant)) == tenant
    write(tmp_path, "acme:eu/west", "version: 7")
    registry = TenantConfigs.load(tmp_path)
    assert registry.tenants == {"acme:eu/west"}
    assert registry.get("acme:eu/west").version == "7"
    assert registry.get("acme") is DEFAULT_CONFIG


@pytest.mark.parametrize("tenant", ["", "a b", "a%b", "x" * 129])
def test_invalid_tenant_ids_have_no_file(tenant: str) -> None:
    with pytest.raises(ValueError, match="invalid tenant id"):
        tenant_file_name(tenant)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("acme:eu.yaml", "must be in acme%3Aeu.yaml"),  # not percent-encoded
        ("acme%3aeu.yaml", "must be in acme%3Aeu.yaml"),  # lowercase escape
        ("a%20b.yaml", "not <tenant id>.yaml"),  # decodes to an invalid id
        ("%FF.yaml", "not <tenant id>.yaml"),
        ("acme.yml", "not .yml"),
    ],
)
def test_non_canonical_file_names_are_refused(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / name).write_text("version: 1", encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        TenantConfigs.load(tmp_path)


def test_other_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / ".acme.yaml.swp").write_text("junk", encoding="utf-8")
    (tmp_path / "README.md").write_text("junk", encoding="utf-8")
    (tmp_path / "acme.yaml~").write_text("junk", encoding="utf-8")
    (tmp_path / "sub.yaml").mkdir()
    assert TenantConfigs.load(tmp_path).tenants == frozenset()


def test_missing_directory_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MEMCRM_TENANTS_DIR"):
        TenantConfigs.load(tmp_path / "nope")


def test_reload_swaps_in_a_good_edit(tmp_path: Path) -> None:
    write(tmp_path, "acme", "version: 1")
    registry = TenantConfigs.load(tmp_path)
    write(tmp_path, "acme", "version: 2\nproducts: [Travel Card]")
    write(tmp_path, "globex", "version: 1")
    assert registry.reload() is None
    assert registry.get("acme").version == "2"
    assert registry.get("globex").version == "1"


def test_reload_keeps_the_old_configs_on_a_bad_edit(tmp_path: Path) -> None:
    write(tmp_path, "acme", "version: 1\npii: {redact: [email]}")
    write(tmp_path, "globex", "version: 1")
    registry = TenantConfigs.load(tmp_path)
    before = registry.get("acme")
    write(tmp_path, "globex", "version: 2")  # good, but must not land alone
    write(tmp_path, "acme", "version: 2\npii: {redact: [ssn]}")
    error = registry.reload()
    assert isinstance(error, ConfigError)
    assert "acme.yaml: pii.redact[0]: unknown type 'ssn'" in error.message
    assert registry.get("acme") is before
    assert registry.get("globex").version == "1"


def test_reload_without_a_directory_is_a_no_op() -> None:
    registry = TenantConfigs.load(None)
    assert registry.reload() is None and registry.directory is None


def test_reads_during_reloads_only_move_forward(tmp_path: Path) -> None:
    write(tmp_path, "a", "version: 0")
    write(tmp_path, "b", "version: 0")
    registry = TenantConfigs.load(tmp_path)
    seen: list[tuple[str, str]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append((registry.get("a").version, registry.get("b").version))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 20):
            write(tmp_path, "a", f"version: {i}")
            write(tmp_path, "b", f"version: {i}")
            assert registry.reload() is None
    finally:
        stop.set()
        reader.join()
    assert registry.get("a").version == registry.get("b").version == "19"
    assert seen
    versions = [int(a) for a, _ in seen]
    assert versions == sorted(versions)  # a reader never sees an older set after a newer one


def test_parse_config_is_usable_on_its_own() -> None:
    assert parse_config("version: 1", "inline") == TenantConfig(version="1")
