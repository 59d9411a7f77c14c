"""Per-tenant action catalogs: versioned YAML files with their policies, reloadable live.

Why files validated in full at load: a catalog is configuration that decides what customers
are offered, so a typo -- an unknown key, a rule that does not parse, a feature that does not
exist -- must be refused when the file is loaded (start-up or ``reload``), never discovered
by a customer at decision time. Rules are compiled here against the catalog's feature schema
(``memcrm.decisions.policy``), so a loaded catalog can always be evaluated.

A file, ``<tenant>.yaml`` (named as in ``memcrm.core.tenants``: the tenant id percent-encoded),
looks like this; every key but ``version`` and ``actions`` is optional::

    version: 7                      # int or string; decision records cite it
    marketing_consent: opt_out      # or opt_in: marketing actions need consent.marketing=true
    attributes:                     # customer attributes rules may read as attribute.<name>,
      tier: string                  #   from the latest interaction carrying that attribute key
      age: number                   #   (string, number or bool)
    contact:                        # catalog-wide caps, counting the contacts of every action
      - {max: 3, within: 7d}        # no channel: all channels together
    context_weights:                # priority multipliers by context; the product of every
      - {channel: voice, actions: [escalate_to_agent], weight: 1.5}   # entry that matches
      - {intent: lost_or_stolen_card, weight: 2.0}                    # (no actions: all)
    actions:
      - id: apology_credit          # [a-z][a-z0-9_]*, unique
        title: Apologise and offer a travel credit
        description: Send a personal apology ...
        channels: [email, chat, sms, social, voice]
        value: 2.0                  # business value of success (> 0)
        lever: 1.0                  # business weight (> 0, default 1)
        marketing: false            # true: consent-gated (default false)
        eligibility: ["profile.interaction_count >= 1"]     # may this customer ever get it
        applicability: ["count(profile.open_issues) > 0"]   # does it fit now
        suitability: ["not profile.no_calls"]               # is it right for them
        contact:                    # this action's caps, counting its own contacts
          - {channel: email, max: 2, within: 7d}
        suppress: {after_rejections: 2, within: 90d, for: 30d}

Durations are ``30d``, ``12h``, ``2w``, ``15m`` or ``10s``; channels are ``email``, ``chat``,
``voice``, ``sms``, ``social``, ``meeting``, ``ticket``, ``web`` and ``purchase``. A context
weight entry matches when every key it gives matches: ``channel`` the decision's channel,
``intent`` the current message's intent, ``actions`` the action (absent: every action).

Tenants without a file get the built-in catalog, ``catalogs/airline.yaml`` beside this module:
the six actions of ``memcrm.decisions.catalog.BUILTIN_CATALOG`` (the shipped propensity model
was trained on them) with their policies.

Reloading (:meth:`TenantCatalogs.reload`) re-reads every file and swaps the whole mapping in
one reference assignment, so a decision sees one consistent set. A file that fails validation
leaves its tenant on the catalog it had (the other tenants' changes still apply) and the
errors are returned; start-up (:meth:`TenantCatalogs.load`) refuses any bad file.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from memcrm.core.errors import ConfigError
from memcrm.core.tenants import SUFFIX, Name, Text, Version, tenant_id_for_file
from memcrm.core.types import Channel
from memcrm.decisions.catalog import Action, catalog_fingerprint
from memcrm.decisions.contact import ConsentMode, ContactCap, Suppression
from memcrm.decisions.policy import (
    ATTRIBUTE_TYPES,
    BASE_SCHEMA,
    CHANNEL_NAMES,
    MAX_RULE_CHARS,
    FeatureSchema,
    Rule,
    RuleError,
    parse_duration,
    parse_rule,
)

BUILTIN_RESOURCE: Final = "catalogs/airline.yaml"

_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SEGMENT = r"[A-Za-z_][A-Za-z0-9_]{0,63}"
_ATTRIBUTE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")
_INTENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


# ---------------------------------------------------------------------------------------------
# What a file says (pydantic)


def _duration(value: object) -> timedelta:
    if not isinstance(value, str):
        raise PydanticCustomError("duration", "must be a duration like 30d, 12h, 2w, 15m or 10s")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("duration", str(exc)) from None


def _channel(value: object) -> Channel:
    channel = CHANNEL_NAMES.get(value) if isinstance(value, str) else None
    if channel is None:
        raise PydanticCustomError(
            "channel",
            "unknown channel {value}; known: {known}",
            {"value": repr(value), "known": ", ".join(CHANNEL_NAMES)},
        )
    return channel


def _matches(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise PydanticCustomError(
                "pattern",
                "{value} is not a valid {what} ({pattern})",
                {"value": repr(value), "what": what, "pattern": pattern.pattern},
            )
        return value

    return AfterValidator(check)


Duration = Annotated[timedelta, BeforeValidator(_duration)]
ChannelName = Annotated[Channel, BeforeValidator(_channel)]
ActionId = Annotated[str, _matches(_ID, "action id")]
Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(strict=True, ge=1, le=1_000_000)]
RuleText = Annotated[str, Field(min_length=1, max_length=MAX_RULE_CHARS)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CapModel(_Frozen):
    channel: ChannelName | None = None
    max: Count
    within: Duration


class SuppressModel(_Frozen):
    after_rejections: Count
    within: Duration | None = None
    duration: Duration = Field(alias="for")


def _not_empty(value: tuple[object, ...]) -> tuple[object, ...]:
    # A validator, not min_length: pydantic would add a length error to every bad item's.
    if not value:
        raise PydanticCustomError("empty", "must list at least one")
    return value


class ContextWeightModel(_Frozen):
    channel: ChannelName | None = None
    intent: Annotated[str, _matches(_INTENT, "intent")] | None = None
    actions: Annotated[tuple[ActionId, ...], AfterValidator(_not_empty)] | None = None
    weight: Positive

    @model_validator(mode="after")
    def _says_when(self) -> ContextWeightModel:
        if self.channel is None and self.intent is None:
            raise PydanticCustomError("context", "give a channel, an intent or both")
        return self


def _unique_channels(value: tuple[Channel, ...]) -> tuple[Channel, ...]:
    _not_empty(value)
    if len(set(value)) != len(value):
        raise PydanticCustomError("duplicate", "a channel is listed twice")
    return value


class ActionModel(_Frozen):
    id: ActionId
    title: Name
    description: Text
    channels: Annotated[tuple[ChannelName, ...], AfterValidator(_unique_channels)]
    value: Positive
    lever: Positive = 1.0
    marketing: Annotated[bool, Field(strict=True)] = False
    eligibility: tuple[RuleText, ...] = ()
    applicability: tuple[RuleText, ...] = ()
    suitability: tuple[RuleText, ...] = ()
    contact: tuple[CapModel, ...] = ()
    suppress: SuppressModel | None = None


class CatalogModel(_Frozen):
    version: Version
    marketing_consent: Literal["opt_out", "opt_in"] = "opt_out"
    attributes: dict[
        Annotated[str, _matches(_ATTRIBUTE, "attribute name")],
        Literal["string", "number", "bool"],
    ] = Field(default_factory=dict)
    contact: tuple[CapModel, ...] = ()
    context_weights: tuple[ContextWeightModel, ...] = ()
    actions: tuple[ActionModel, ...]

    @field_validator("actions")
    @classmethod
    def _unique_ids(cls, value: tuple[ActionModel, ...]) -> tuple[ActionModel, ...]:
        _not_empty(value)
        first: dict[str, int] = {}
        for i, action in enumerate(value):
            if action.id in first:
                raise PydanticCustomError(
                    "duplicate",
                    "id {id} is in items {a} and {b}",
                    {"id": repr(action.id), "a": first[action.id], "b": i},
                )
            first[action.id] = i
        return value


# ---------------------------------------------------------------------------------------------
# What a catalog is (compiled)


class RuleKind(StrEnum):
    """Pega's engagement policy terms, in the order they are evaluated."""

    ELIGIBILITY = "eligibility"  # may this customer ever get it
    APPLICABILITY = "applicability"  # does it fit now
    SUITABILITY = "suitability"  # is it right for them


PREDICTION_PREFIX = "prediction."


@dataclass(frozen=True, slots=True)
class PolicyRule:
    kind: RuleKind
    index: int  # position in its list in the file
    rule: Rule


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """A catalog action with its policies."""

    action: Action  # what the propensity model reads: id, title, description, channels, value
    lever: float
    marketing: bool
    rules: tuple[PolicyRule, ...]  # eligibility, then applicability, then suitability
    contact: tuple[ContactCap, ...]
    suppress: Suppression | None

    @property
    def action_id(self) -> str:
        return self.action.action_id


@dataclass(frozen=True, slots=True)
class ContextWeight:
    weight: float
    channel: Channel | None = None
    intent: str | None = None
    actions: frozenset[str] | None = None  # None: every action

    def applies(self, action_id: str, channel: Channel, intent: str) -> bool:
        return (
            (self.channel is None or self.channel is channel)
            and (self.intent is None or self.intent == intent)
            and (self.actions is None or action_id in self.actions)
        )


@dataclass(frozen=True, slots=True)
class TenantCatalog:
    version: str
    source: str  # the file it came from, for messages and records
    actions: tuple[ActionSpec, ...]
    schema: FeatureSchema
    marketing_consent: ConsentMode = "opt_out"
    contact: tuple[ContactCap, ...] = ()
    context_weights: tuple[ContextWeight, ...] = ()

    @property
    def model_actions(self) -> tuple[Action, ...]:
        """The actions as the recommender and the propensity model know them, in file order."""
        return tuple(spec.action for spec in self.actions)

    @property
    def action_ids(self) -> tuple[str, ...]:
        return tuple(spec.action_id for spec in self.actions)

    @property
    def reads_predictions(self) -> bool:
        """Whether any rule reads a ``prediction.*`` feature (decisions then compute them)."""
        return any(
            path.startswith(PREDICTION_PREFIX)
            for spec in self.actions
            for policy in spec.rules
            for path in policy.rule.features
        )

    @property
    def fingerprint(self) -> str:
        """``catalog_fingerprint`` of the actions: what a trained model depends on."""
        return catalog_fingerprint(self.model_actions)

    def action(self, action_id: str) -> ActionSpec:
        for spec in self.actions:
            if spec.action_id == action_id:
                return spec
        raise KeyError(action_id)

    def context_weight(self, action_id: str, channel: Channel, intent: str) -> float:
        """The product of every matching entry's weight; 1.0 when none matches."""
        return math.prod(
            w.weight for w in self.context_weights if w.applies(action_id, channel, intent)
        )


# ---------------------------------------------------------------------------------------------
# Parsing


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader (no object tags) that refuses duplicate keys instead of keeping the last."""


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

_CUSTOM_ERRORS = frozenset(
    {"duration", "channel", "pattern", "duplicate", "context", "version", "empty"}
)


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _problem(err: Mapping[str, Any]) -> str:
    message = str(err["msg"]).removeprefix("Value error, ")
    given = err.get("input")
    if (
        err["type"] not in _CUSTOM_ERRORS
        and err["type"] != "missing"
        and isinstance(given, str | int | float | bool)
    ):
        message += f" (got {given!r})"
    return message


def parse_catalog(text: str, source: str) -> TenantCatalog:
    """Validate one catalog file's text; ConfigError names ``source`` and every bad field."""
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping with 'version' and 'actions'")
    try:
        model = CatalogModel.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_location(tuple(e['loc'])) or '(top level)'}: {_problem(e)}" for e in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None
    return _compile(model, source)


def _compile(model: CatalogModel, source: str) -> TenantCatalog:
    schema = BASE_SCHEMA.with_attributes(
        {name: ATTRIBUTE_TYPES[kind] for name, kind in model.attributes.items()}
    )
    problems: list[str] = []
    actions = []
    for i, a in enumerate(model.actions):
        rules: list[PolicyRule] = []
        for kind in RuleKind:
            for j, text in enumerate(getattr(a, kind.value)):
                try:
                    rule = parse_rule(text, schema, where=f"actions[{i}] ({a.id}).{kind}[{j}]")
                except RuleError as exc:
                    problems.append(exc.message)
                    continue
                rules.append(PolicyRule(kind, j, rule))
        actions.append(
            ActionSpec(
                action=Action(a.id, a.title, a.description, frozenset(a.channels), a.value),
                lever=a.lever,
                marketing=a.marketing,
                rules=tuple(rules),
                contact=tuple(_cap(c) for c in a.contact),
                suppress=Suppression(
                    a.suppress.after_rejections, a.suppress.duration, a.suppress.within
                )
                if a.suppress is not None
                else None,
            )
        )
    ids = {a.id for a in model.actions}
    for i, w in enumerate(model.context_weights):
        for action_id in w.actions or ():
            if action_id not in ids:
                problems.append(f"context_weights[{i}].actions: unknown action {action_id!r}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return TenantCatalog(
        version=model.version,
        source=source,
        actions=tuple(actions),
        schema=schema,
        marketing_consent=model.marketing_consent,
        contact=tuple(_cap(c) for c in model.contact),
        context_weights=tuple(
            ContextWeight(
                w.weight,
                w.channel,
                w.intent,
                frozenset(w.actions) if w.actions is not None else None,
            )
            for w in model.context_weights
        ),
    )


def _cap(model: CapModel) -> ContactCap:
    return ContactCap(model.max, model.within, model.channel)


@functools.cache
def builtin_catalog() -> TenantCatalog:
    """The catalog of tenants without a file (``catalogs/airline.yaml``)."""
    resource = resources.files("memcrm.decisions").joinpath(BUILTIN_RESOURCE)
    return parse_catalog(
        resource.read_text(encoding="utf-8"), f"memcrm.decisions/{BUILTIN_RESOURCE}"
    )


# ---------------------------------------------------------------------------------------------
# A directory of tenant catalogs

Check = Callable[[TenantCatalog], None]


def _read(path: Path, check: Check | None) -> TenantCatalog:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name}: cannot read {path}: {exc}") from None
    catalog = parse_catalog(text, path.name)
    if check is not None:
        try:
            check(catalog)
        except ConfigError as exc:
            raise ConfigError(f"{path.name}: {exc.message}") from None
    return catalog


def _scan(directory: Path) -> tuple[dict[str, Path], list[ConfigError]]:
    """Tenant -> file of every catalog file, and the files named wrongly."""
    if not directory.is_dir():
        raise ConfigError(f"catalogs: {directory} is not a directory")
    files: dict[str, Path] = {}
    errors: list[ConfigError] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".yml":
            errors.append(ConfigError(f"{path.name}: catalog files end in {SUFFIX}, not .yml"))
            continue
        if path.suffix != SUFFIX:
            continue
        try:
            files[tenant_id_for_file(path.name)] = path
        except ConfigError as exc:
            errors.append(exc)
    return files, errors


class TenantCatalogs:
    """Tenant id -> catalog; tenants without a file get :func:`builtin_catalog`.

    Readers never lock: ``get`` reads one reference to an immutable mapping, and ``reload``
    replaces it in one assignment (a lock orders reloads). ``check`` is called on each catalog
    read from a file and may refuse it with a ConfigError (e.g. actions the active propensity
    model cannot score).
    """

    def __init__(
        self,
        directory: Path | None,
        catalogs: Mapping[str, TenantCatalog],
        *,
        check: Check | None = None,
    ) -> None:
        self._directory = directory
        self._catalogs: Mapping[str, TenantCatalog] = dict(catalogs)
        self._check = check
        self._reload_lock = threading.Lock()

    @classmethod
    def load(cls, directory: Path | None, *, check: Check | None = None) -> TenantCatalogs:
        """Read and validate every file now; any bad file raises (fail fast at start-up)."""
        builtin_catalog()  # a broken built-in catalog must stop start-up too
        if directory is None:
            return cls(None, {}, check=check)
        files, errors = _scan(directory)
        catalogs: dict[str, TenantCatalog] = {}
        for tenant_id, path in files.items():
            try:
                catalogs[tenant_id] = _read(path, check)
            except ConfigError as exc:
                errors.append(exc)
        if errors:
            raise ConfigError("; ".join(e.message for e in errors))
        return cls(directory, catalogs, check=check)

    @property
    def directory(self) -> Path | None:
        return self._directory

    @property
    def tenants(self) -> frozenset[str]:
        """Tenants that have a catalog file in effect."""
        return frozenset(self._catalogs)

    def get(self, tenant_id: str) -> TenantCatalog:
        catalog = self._catalogs.get(tenant_id)
        return catalog if catalog is not None else builtin_catalog()

    def reload(self) -> ConfigError | None:
        """Re-read the directory and swap in what validated; None when every file did.

        A tenant whose file fails keeps the catalog it had (the built-in one if it had none);
        a tenant whose file was removed goes back to the built-in catalog. The error returned
        names each failing file and what its tenant kept. An unreadable directory changes
        nothing.
        """
        if self._directory is None:
            return None
        with self._reload_lock:
            try:
                files, errors = _scan(self._directory)
            except ConfigError as exc:
                return exc
            current = self._catalogs
            fresh: dict[str, TenantCatalog] = {}
            for tenant_id, path in files.items():
                try:
                    fresh[tenant_id] = _read(path, self._check)
                except ConfigError as exc:
                    old = current.get(tenant_id)
                    if old is not None:
                        fresh[tenant_id] = old
                        kept = f"kept version {old.version}"
                    else:
                        kept = "the tenant stays on the built-in catalog"
                    errors.append(ConfigError(f"{exc.message} ({kept})"))
            self._catalogs = fresh
            if errors:
                return ConfigError("; ".join(e.message for e in errors))
            return None
