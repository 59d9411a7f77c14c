"""The gateway replicas' routing policy: fill the first replica, spill to the next."""

from __future__ import annotations

from dataclasses import dataclass

from memcrm.services.routing import fill_first


@dataclass(frozen=True)
class Replica:
    name: str


def route(in_flight: dict[str, int | None], spill_at: int = 2) -> list[list[str]]:
    replicas = [Replica(n) for n in in_flight]
    ranks = fill_first(
        replicas,
        key=lambda r: r.name,
        in_flight=lambda r: in_flight[r.name],
        spill_at=spill_at,
    )
    return [[r.name for r in rank] for rank in ranks]


def test_light_load_stays_on_the_first_replica_in_a_fixed_order() -> None:
    assert route({"b": 0, "a": 0}) == [["a"]]
    assert route({"b": 0, "a": 1}) == [["a"]]


def test_a_replica_at_spill_at_sends_the_call_to_the_next() -> None:
    assert route({"a": 2, "b": 0}) == [["b"]]
    assert route({"a": 2, "b": 1, "c": 0}) == [["b"]]
    assert route({"a": 0, "b": 0}, spill_at=1) == [["a"]]
    assert route({"a": 1, "b": 0}, spill_at=1) == [["b"]]


def test_every_replica_busy_or_unknown_leaves_the_choice_to_serve() -> None:
    assert route({"b": 2, "a": 5}) == [["a", "b"]]
    assert route({"a": None, "b": None}) == [["a", "b"]]
    # An unknown count is never taken for an idle replica.
    assert route({"a": None, "b": 1}) == [["b"]]
    assert route({}) == []


def test_the_gateway_deployment_names_this_router() -> None:
    from memcrm.services.app import FILL_FIRST
    from memcrm.services.recommendations import DECISION_THREADS
    from memcrm.services.routing import FillFirstRouter

    assert FILL_FIRST.get_request_router_class() is FillFirstRouter
    assert FILL_FIRST.request_router_kwargs == {"spill_at": DECISION_THREADS}
