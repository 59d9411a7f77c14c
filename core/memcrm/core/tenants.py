"""Per-tenant configuration: one YAML file per tenant in ``MEMCRM_TENANTS_DIR``.

Why files validated all at once: a typo in a tenant's PII policy must stop the server at start
(or be refused by ``reload``), never silently store a card number in clear text.

A file, ``<tenant>.yaml``, looks like this (every key but ``version`` is optional)::

    version: 3                      # int or string; decisions cite it with the config they used
    pii:
      mode: redact                  # or store_as_is
      redact: [payment_card, iban]  # among email, phone, payment_card, iban (the default)
    intents:
      set: banking77                # name of a trained intent head
    issues:
      enabled: true                 # the shipped issue types are airline complaint reasons;
                                    # false: no issue labels (e.g. a bank)
    products: [Premium Checking, Travel Card]
    competitors: [Globex Bank, Initech]
    objections:                     # absent: the shipped default objection set
      - label: price
        description: The customer finds it too expensive.
        examples: ["That's way too pricey for me", "Your fees are higher than elsewhere"]
      - label: timing
        description: Not now; maybe later.
        examples: ["Call me again next quarter"]
    signals:                        # WatchSignals: emit when a prediction crosses its
      thresholds:                   # threshold (0 < t < 1); unlisted ones use 0.5
        churn_risk: 0.6
        support_need: 0.7

An empty ``objections: []`` turns objection detection off for the tenant; a list replaces the
default set entirely (labels may be added or removed).

File names: a tenant id (1-128 characters of ``[A-Za-z0-9._:@/-]``) is percent-encoded, so
``:`` becomes ``%3A`` and ``/`` becomes ``%2F``, and a leading ``.`` becomes ``%2E`` (no hidden
files): tenant ``acme:eu/west`` lives in ``acme%3Aeu%2Fwest.yaml``. ``tenant_file_name`` gives
the name; a file whose name is not the canonical encoding of a valid id is refused. Hidden
files and files not ending in ``.yaml`` are ignored, except ``*.yml``, refused to catch the
likely typo. Tenants without a file get ``DEFAULT_CONFIG``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote, unquote

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from memcrm.core.errors import ConfigError
from memcrm.core.types import SIGNAL_NAMES
from memcrm.core.validation import ID_PATTERN

# The single source of truth for which entity types count as PII (memcrm.interpret.pii uses it).
PII_TYPES: Final = frozenset({"email", "phone", "payment_card", "iban"})
DEFAULT_REDACT: Final = ("payment_card", "iban")
DEFAULT_INTENT_SET: Final = "banking77"
# A prediction is "likely" from here on unless the tenant says otherwise.
DEFAULT_SIGNAL_THRESHOLD: Final = 0.5
SUFFIX: Final = ".yaml"

_LABEL = re.compile(r"[a-z][a-z0-9_]{0,63}")
_INTENT_SET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _pii_type(value: str) -> str:
    if value not in PII_TYPES:
        raise PydanticCustomError(
            "pii_type",
            "unknown type {value}; known: {known}",
            {"value": repr(value), "known": _known()},
        )
    return value


def _known() -> str:
    return ", ".join(sorted(PII_TYPES))


def _version(value: object) -> object:
    # YAML turns 3 into int and 3.0 into float: accept int and str, reject float and bool.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PydanticCustomError("version", "must be a string or an integer")
    text = str(value).strip()
    if not text:
        raise PydanticCustomError("version", "must not be empty")
    return text


def _name(value: str) -> str:
    flat = " ".join(value.split())
    if not flat:
        raise PydanticCustomError("blank", "must not be blank")
    return flat


def _pattern(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise PydanticCustomError(
                "pattern",
                "{value} is not a valid {what} ({pattern})",
                {"value": repr(value), "what": what, "pattern": pattern.pattern},
            )
        return value

    return AfterValidator(check)


PiiType = Annotated[str, AfterValidator(_pii_type)]
Name = Annotated[str, Field(max_length=200), AfterValidator(_name)]
Text = Annotated[str, Field(max_length=2000), AfterValidator(_name)]
Version = Annotated[str, BeforeValidator(_version), Field(max_length=64)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PiiConfig(_Frozen):
    """What to do with PII before a text is stored and embedded."""

    mode: Literal["store_as_is", "redact"] = "redact"
    redact: tuple[PiiType, ...] = DEFAULT_REDACT

    @model_validator(mode="after")
    def _redact_needs_redact_mode(self) -> PiiConfig:
        if self.mode == "store_as_is" and "redact" in self.model_fields_set and self.redact:
            raise PydanticCustomError(
                "pii_mode", "'redact' lists types but mode is store_as_is; set mode: redact"
            )
        return self

    @property
    def redact_types(self) -> frozenset[str]:
        """The types replaced before storage: none when the text is stored as is."""
        return frozenset(self.redact) if self.mode == "redact" else frozenset()


class IntentsConfig(_Frozen):
    set: Annotated[str, _pattern(_INTENT_SET, "intent set name")] = DEFAULT_INTENT_SET


class IssuesConfig(_Frozen):
    """Issue types come from the shipped airline head; a tenant in another domain turns it off
    rather than get "Bad Flight" for a card that does not work."""

    enabled: bool = True


class ObjectionConfig(_Frozen):
    """One objection label as plain data; memcrm.interpret.objections turns it into a spec."""

    label: Annotated[str, _pattern(_LABEL, "label")]
    description: Text
    examples: tuple[Text, ...] = ()


def _signal_name(value: str) -> str:
    if value not in SIGNAL_NAMES:
        raise PydanticCustomError(
            "pattern",
            "unknown prediction {value}; known: {known}",
            {"value": repr(value), "known": ", ".join(SIGNAL_NAMES)},
        )
    return value


Threshold = Annotated[float, Field(gt=0.0, lt=1.0)]


class SignalsConfig(_Frozen):
    """Thresholds of the proactive signals (WatchSignals, memcrm.decisions.predictions)."""

    thresholds: dict[Annotated[str, AfterValidator(_signal_name)], Threshold] = Field(
        default_factory=dict
    )

    def threshold(self, name: str) -> float:
        return self.thresholds.get(name, DEFAULT_SIGNAL_THRESHOLD)


class TenantConfig(_Frozen):
    version: Version
    pii: PiiConfig = PiiConfig()
    intents: IntentsConfig = IntentsConfig()
    issues: IssuesConfig = IssuesConfig()
    products: tuple[Name, ...] = ()
    competitors: tuple[Name, ...] = ()
    # None: the shipped default objection set; () turns objections off.
    objections: tuple[ObjectionConfig, ...] | None = None
    signals: SignalsConfig = SignalsConfig()

    @field_validator("objections")
    @classmethod
    def _unique_labels(
        cls, value: tuple[ObjectionConfig, ...] | None
    ) -> tuple[ObjectionConfig, ...] | None:
        first: dict[str, int] = {}
        for i, item in enumerate(value or ()):
            if item.label in first:
                raise PydanticCustomError(
                    "duplicate",
                    "label {label} is in items {a} and {b}",
                    {"label": repr(item.label), "a": first[item.label], "b": i},
                )
            first[item.label] = i
        return value

    @field_validator("competitors")
    @classmethod
    def _competitors_are_not_products(
        cls, value: tuple[str, ...], info: ValidationInfo
    ) -> tuple[str, ...]:
        # One name, one type: the entity detector could not tell which was meant.
        products = {p.casefold() for p in info.data.get("products", ())}
        for i, name in enumerate(value):
            if name.casefold() in products:
                raise PydanticCustomError(
                    "duplicate",
                    "item {i} ({name}) is also listed in products",
                    {"i": i, "name": repr(name)},
                )
        return value


DEFAULT_CONFIG: Final = TenantConfig(version="default")


def tenant_file_name(tenant_id: str) -> str:
    """The file holding ``tenant_id``'s configuration (percent-encoded, see the module doc)."""
    if not ID_PATTERN.fullmatch(tenant_id):
        raise ValueError(f"invalid tenant id {tenant_id!r}")
    encoded = quote(tenant_id, safe="@")
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]
    return encoded + SUFFIX


def tenant_id_for_file(name: str) -> str:
    """The tenant a file name stands for; ConfigError unless the name is canonical."""
    try:
        tenant_id = unquote(name.removesuffix(SUFFIX), errors="strict")
    except UnicodeDecodeError:
        tenant_id = ""
    if not name.endswith(SUFFIX) or not ID_PATTERN.fullmatch(tenant_id):
        raise ConfigError(f"{name}: not <tenant id>{SUFFIX} for a valid tenant id")
    canonical = tenant_file_name(tenant_id)
    if canonical != name:
        raise ConfigError(f"{name}: tenant {tenant_id!r} must be in {canonical}")
    return tenant_id


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of duplicate keys; a duplicated key is almost always a mistake."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    keys: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        keys.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _problem(err: Mapping[str, Any]) -> str:
    message = str(err["msg"]).removeprefix("Value error, ")
    given = err.get("input")
    custom = err["type"] in {"pii_type", "version", "pattern", "blank", "duplicate"}
    if not custom and err["type"] != "missing" and isinstance(given, str | int | float | bool):
        message += f" (got {given!r})"
    return message


def parse_config(text: str, source: str) -> TenantConfig:
    """Validate one file's text; ConfigError names ``source`` and each offending field path."""
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no object tags
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping with at least 'version'")
    try:
        return TenantConfig.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_location(tuple(e['loc'])) or '(top level)'}: {_problem(e)}" for e in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None


def read_directory(directory: Path) -> dict[str, TenantConfig]:
    """Every tenant file in ``directory``, all validated; the first bad file raises."""
    if not directory.is_dir():
        raise ConfigError(f"MEMCRM_TENANTS_DIR: {directory} is not a directory")
    configs: dict[str, TenantConfig] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".yml":
            raise ConfigError(f"{path.name}: tenant files end in {SUFFIX}, not .yml")
        if path.suffix != SUFFIX:
            continue
        tenant_id = tenant_id_for_file(path.name)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path.name}: cannot read {path}: {exc}") from None
        configs[tenant_id] = parse_config(text, path.name)
    return configs


class TenantConfigs:
    """Tenant id -> configuration; ``reload`` swaps the whole set at once or not at all.

    Readers never lock: ``get`` reads one reference to an immutable mapping, and ``reload``
    replaces that reference only after every file validated (a lock orders reloads).
    """

    def __init__(self, directory: Path | None, configs: Mapping[str, TenantConfig]) -> None:
        self._directory = directory
        self._configs: Mapping[str, TenantConfig] = dict(configs)
        self._reload_lock = threading.Lock()

    @classmethod
    def load(cls, directory: Path | None) -> TenantConfigs:
        """Read and validate every file now (fail fast); None means every tenant is default."""
        return cls(directory, read_directory(directory) if directory is not None else {})

    @property
    def directory(self) -> Path | None:
        return self._directory

    @property
    def tenants(self) -> frozenset[str]:
        """Tenants that have a file."""
        return frozenset(self._configs)

    def get(self, tenant_id: str) -> TenantConfig:
        return self._configs.get(tenant_id, DEFAULT_CONFIG)

    def reload(self) -> ConfigError | None:
        """Re-read the directory; on any error keep the current configs and return the error."""
        if self._directory is None:
            return None
        with self._reload_lock:
            try:
                fresh = read_directory(self._directory)
            except ConfigError as exc:
                return exc
            self._configs = fresh
            return None
