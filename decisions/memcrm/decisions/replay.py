"""Replaying a decision: what differs between a recorded decision and its recomputation.

An auditor asks whether a recorded recommendation can be reproduced: recomputed from what was
known at the decision's ``as_of`` (memories, profile, outcomes and consent as recorded by then,
see ``memcrm.memory``'s bitemporal reads) with the same model version and catalog version.
Everything in a decision is deterministic (scoring in the precision its record names, seeded
SHAP), so a faithful replay gives the same numbers bit for bit, and the comparison here is
exact: any difference is reported, one line per field, with both values.

What cannot be replayed is said instead of recomputed: a decision made by a model version
or under a catalog version that is no longer the one in effect, or whose context was embedded
in another format than this server's (a bfloat16 query encoder on a CPU without it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from memcrm.core.types import (
    ConsideredAction,
    DecisionRecord,
    Explanation,
    RecommendedAction,
)


@dataclass(frozen=True, slots=True)
class Replay:
    identical: bool
    diff: str  # "" when identical; otherwise one line per difference


def cannot_replay(reason: str) -> Replay:
    return Replay(False, f"not replayed: {reason}")


def compare(original: DecisionRecord, replayed: DecisionRecord) -> Replay:
    """Every difference between a recorded decision and its recomputation."""
    lines: list[str] = []

    def differ(where: str, was: object, now: object) -> None:
        if was != now:
            lines.append(f"{where}: recorded {was!r}, replayed {now!r}")

    differ("model_version", original.model_version, replayed.model_version)
    differ("model_sha256", original.model_sha256, replayed.model_sha256)
    differ("catalog_version", original.catalog_version, replayed.catalog_version)
    differ("as_of", original.as_of, replayed.as_of)
    differ("arithmetic", original.arithmetic, replayed.arithmetic)
    differ(
        "actions",
        [a.action_id for a in original.actions],
        [a.action_id for a in replayed.actions],
    )
    for was, now in zip(original.actions, replayed.actions, strict=False):
        if was.action_id == now.action_id:
            lines += _action_diff(f"actions[{was.action_id}]", was, now)
    differ(
        "considered",
        [c.action_id for c in original.considered],
        [c.action_id for c in replayed.considered],
    )
    replayed_considered = {c.action_id: c for c in replayed.considered}
    for before in original.considered:
        after = replayed_considered.get(before.action_id)
        if after is not None:
            lines += _considered_diff(f"considered[{before.action_id}]", before, after)
    return Replay(not lines, "\n".join(lines))


def _action_diff(where: str, was: RecommendedAction, now: RecommendedAction) -> list[str]:
    lines = _fields(where, was, now, ("title", "rank", "score", "propensity", "value"))
    return lines + _explanation_diff(f"{where}.explanation", was.explanation, now.explanation)


def _explanation_diff(where: str, was: Explanation, now: Explanation) -> list[str]:
    lines = _fields(
        where, was, now, ("explainer", "base_value", "output_value", "output_name", "summary")
    )
    lines += _pairs(
        f"{where}.features",
        [(f.feature, f.value, f.shap_value) for f in was.features],
        [(f.feature, f.value, f.shap_value) for f in now.features],
    )
    lines += _pairs(
        f"{where}.memories",
        [(m.memory_id, m.shap_value) for m in was.memories],
        [(m.memory_id, m.shap_value) for m in now.memories],
    )
    return lines


def _considered_diff(where: str, was: ConsideredAction, now: ConsideredAction) -> list[str]:
    return _fields(
        where,
        was,
        now,
        (
            "log_odds",
            "propensity",
            "value",
            "score",
            "rank",
            "reason",
            "context_weight",
            "lever",
            "filtered_by",
            "policy",
            "reads_json",
        ),
    )


def _fields(where: str, was: object, now: object, names: Sequence[str]) -> list[str]:
    lines = []
    for name in names:
        a, b = getattr(was, name), getattr(now, name)
        if a != b:
            lines.append(f"{where}.{name}: recorded {a!r}, replayed {b!r}")
    return lines


def _pairs(
    where: str, was: Sequence[tuple[object, ...]], now: Sequence[tuple[object, ...]]
) -> list[str]:
    if len(was) != len(now):
        return [f"{where}: recorded {len(was)} entries, replayed {len(now)}"]
    return [
        f"{where}[{i}]: recorded {a!r}, replayed {b!r}"
        for i, (a, b) in enumerate(zip(was, now, strict=True))
        if a != b
    ]
