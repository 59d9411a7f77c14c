"""Customer profiles on the real stores: kept up to date at ingestion in Redis, rebuilt from
PostgreSQL, the same either way; ``as_of`` sees only what had been recorded by then."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis

from memcrm.core.errors import InvalidArgument, NotFound
from memcrm.core.types import (
    Channel,
    CustomerProfile,
    Direction,
    IngestOutcome,
    Interaction,
    Label,
    Memory,
    TraceRef,
)
from memcrm.interpret.pipeline import Interpreter
from memcrm.memory.embedded import EmbeddedStores
from memcrm.memory.hot import HotState
from memcrm.memory.ingest import Ingestor, Screening
from memcrm.memory.migrate import migrate
from memcrm.memory.profile import Profiles, load_state, render
from memcrm.memory.store import MemoryStore

pytestmark = pytest.mark.integration

TRACE = TraceRef("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SOMETIME = datetime(2030, 1, 1, tzinfo=UTC)


class CountingStore(MemoryStore):
    """The real store, counting the profile rebuilds it serves."""

    reads = 0

    def customer_memories(
        self, tenant_id: str, customer_id: str, *, as_of: datetime
    ) -> list[Memory]:
        self.reads += 1
        return super().customer_memories(tenant_id, customer_id, as_of=as_of)

    def customers_memories(
        self, tenant_id: str, customer_ids: Sequence[str], *, as_of: datetime
    ) -> dict[str, list[Memory]]:
        self.reads += 1
        return super().customers_memories(tenant_id, customer_ids, as_of=as_of)


@pytest.fixture(scope="module")
def store(stores: EmbeddedStores) -> Iterator[CountingStore]:
    migrate(stores.database_url)
    s = CountingStore(stores.database_url)
    yield s
    s.close()


@pytest.fixture(scope="module")
def hot(stores: EmbeddedStores) -> Iterator[HotState]:
    h = HotState(stores.redis_url)
    yield h
    h.close()


@pytest.fixture(scope="module")
def rds(stores: EmbeddedStores) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(stores.redis_url)
    yield r
    r.close()


@pytest.fixture(scope="module")
def ingestor(store: CountingStore, hot: HotState, interpreter: Interpreter) -> Ingestor:
    return Ingestor(store, hot, interpreter)


@pytest.fixture(scope="module")
def profiles(store: CountingStore, hot: HotState) -> Profiles:
    return Profiles(store, hot)


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def said(
    interaction_id: str, text: str, at: datetime, customer: str = "alice", **kw: object
) -> Interaction:
    base = Interaction(
        interaction_id=interaction_id,
        customer_id=customer,
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        occurred_at=at,
        text=text,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def prepare(
    ingestor: Ingestor,
    tenant: str,
    interaction: Interaction,
    sentiment: str = "neutral",
    score: float = 0.0,
    issue: str | None = None,
) -> tuple[Screening, list[object]]:
    """Screen and analyse one interaction with the real models, then set what the heads said
    (sentiment and issue), so the profile's rules get exactly the input a test means."""
    screening = ingestor.screen(tenant, [interaction])
    analyses = ingestor.interpreter.analyze(screening.texts, "banking77")
    return screening, [
        replace(
            a,
            sentiment=Label(sentiment, 0.9),
            sentiment_score=score,
            issue=Label(issue, 0.9) if issue else None,
        )
        for a in analyses
    ]


def ingest(ingestor: Ingestor, tenant: str, interaction: Interaction, **heads: object) -> str:
    """Ingest through ``Ingestor.store``, as the service does; the memory id."""
    screening, analyses = prepare(ingestor, tenant, interaction, **heads)  # type: ignore[arg-type]
    (outcome,) = ingestor.store(screening, analyses, TRACE)  # type: ignore[arg-type]
    assert outcome.error == "" and not outcome.duplicate
    return outcome.memory_id


def key(tenant: str, customer: str = "alice") -> str:
    return f"memcrm:profile:{len(tenant)}:{tenant}:{customer}"


def timeless(p: CustomerProfile) -> CustomerProfile:
    """The profile without the moment it was asked for."""
    return replace(p, as_of=SOMETIME)


def rebuilt(profiles: Profiles, tenant: str, customer: str = "alice") -> CustomerProfile:
    return timeless(render(profiles.rebuild(tenant, customer), customer, SOMETIME))


def cited(p: CustomerProfile) -> set[str]:
    ids = {i for item in (*p.open_issues, *p.objections, *p.preferences) for i in item.memory_ids}
    ids |= {c.memory_id for c in p.last_contact}
    return ids | {x.memory_id for x in p.sentiment_trend.points}


def ids_in_postgres(stores: EmbeddedStores, tenant: str) -> set[str]:
    with psycopg.connect(stores.database_url) as conn:
        rows = conn.execute(
            "SELECT memory_id::text FROM memories WHERE tenant_id = %s", (tenant,)
        ).fetchall()
    return {r[0] for r in rows}


def test_the_profile_kept_at_ingestion_is_the_rebuilt_one_and_survives_flushall(
    ingestor: Ingestor,
    profiles: Profiles,
    store: CountingStore,
    rds: redis.Redis,
    stores: EmbeddedStores,
    tenant: str,
) -> None:
    complaint = "My suitcase never arrived in Boston and nobody answers the phone."
    lost = ingest(
        ingestor,
        tenant,
        said("a", complaint, T0),
        sentiment="negative",
        score=-0.9,
        issue="Lost Luggage",
    )
    assert rds.exists(key(tenant)), "the first ingestion caches the profile"
    reads = store.reads
    prefer = ingest(
        ingestor,
        tenant,
        said("b", "Please contact me by email from now on.", T0 + timedelta(hours=1)),
    )
    again = ingest(
        ingestor,
        tenant,
        said("c", "Still no bag, third day now.", T0 + timedelta(hours=2), channel=Channel.CHAT),
        sentiment="negative",
        score=-0.7,
        issue="Lost Luggage",
    )
    ingest(
        ingestor,
        tenant,
        said("d", "We are tracing it", T0 + timedelta(hours=3), direction=Direction.OUTBOUND),
    )
    assert store.reads == reads, "later memories are folded in without reading PostgreSQL"

    cached = profiles.get(tenant, "alice")
    assert store.reads == reads, "served from Redis"
    assert timeless(cached) == rebuilt(profiles, tenant)
    assert [i.memory_ids for i in cached.open_issues] == [(lost, again)]
    assert cached.open_issues[0].text.startswith("Lost Luggage, open since 2 March 2026")
    assert cached.preferences[0].memory_ids == (prefer,)
    assert cached.preferences[0].text.startswith("Prefers to be contacted by email")
    assert cached.interaction_count == 4
    assert "Open issue: Lost Luggage since 2 March 2026." in cached.summary

    # An interaction that happened before what is folded: rebuilt from PostgreSQL.
    reads = store.reads
    early = ingest(ingestor, tenant, said("e", "hello", T0 - timedelta(days=1)), score=0.2)
    assert store.reads == reads + 1
    cached = profiles.get(tenant, "alice")
    assert cached.first_seen == T0 - timedelta(days=1)
    assert cached.sentiment_trend.points[0].memory_id == early
    assert timeless(cached) == rebuilt(profiles, tenant)

    rds.flushall()
    cold = profiles.get(tenant, "alice")
    assert timeless(cold) == timeless(cached)
    assert rds.exists(key(tenant)), "the rebuilt state is cached again"
    reads = store.reads
    assert timeless(profiles.get(tenant, "alice")) == timeless(cached)
    assert store.reads == reads

    assert cited(cold) <= ids_in_postgres(stores, tenant)
    visible = {m.memory_id for m in store.customer_memories(tenant, "alice", as_of=SOMETIME)}
    assert cited(cold) <= visible
    assert {lost, prefer, again, early} <= cited(cold)


def test_real_interpretation_gives_the_same_profile_cached_or_rebuilt(
    ingestor: Ingestor, profiles: Profiles, rds: redis.Redis, stores: EmbeddedStores, tenant: str
) -> None:
    texts = [
        "@united my bag never made it to Houston, three days and no update. Where is my luggage?",
        "@united please contact me by email from now on.",
        "@united lost luggage claim 4471 - nobody has called me back. This is unacceptable.",
        "@united flight was fine otherwise, crew were friendly",
    ]
    outcomes: list[IngestOutcome] = []
    for i, text in enumerate(texts):  # one request each, as a stream of tweets arrives
        item = said(f"tw-{i}", text, T0 + timedelta(days=i), channel=Channel.SOCIAL)
        outcomes += ingestor.ingest(tenant, [item], TRACE)
    assert [o.error for o in outcomes] == [""] * len(texts)
    cached = profiles.get(tenant, "alice")
    assert timeless(cached) == rebuilt(profiles, tenant)
    rds.delete(key(tenant))
    assert timeless(profiles.get(tenant, "alice")) == timeless(cached)
    stored = {o.memory_id for o in outcomes}
    assert cited(cached) <= stored
    assert cited(cached) <= ids_in_postgres(stores, tenant)
    # The model reads the two bag complaints as Lost Luggage, still open.
    assert [i.memory_ids for i in cached.open_issues] == [
        (outcomes[0].memory_id, outcomes[2].memory_id)
    ]
    assert [i.memory_ids for i in cached.preferences][:1] == [(outcomes[1].memory_id,)]


def test_as_of_before_a_correction_shows_the_old_version_and_after_it_the_new(
    ingestor: Ingestor, profiles: Profiles, store: CountingStore, tenant: str
) -> None:
    before_anything = datetime.now(UTC)
    v1 = ingest(
        ingestor,
        tenant,
        said("a", "My bag is lost", T0),
        sentiment="negative",
        score=-0.8,
        issue="Lost Luggage",
    )
    other = ingest(ingestor, tenant, said("b", "Any news?", T0 + timedelta(hours=1)))
    before_fix = datetime.now(UTC)
    reads = store.reads
    v2 = ingest(ingestor, tenant, said("a", "Sorry, my mistake: the bag was delivered.", T0))
    assert store.reads == reads + 1, "a correction rebuilds the cached profile"

    old = profiles.get(tenant, "alice", as_of=before_fix)
    assert old.as_of == before_fix
    assert [i.memory_ids for i in old.open_issues] == [(v1,)]
    assert cited(old) == {v1, other}

    now = profiles.get(tenant, "alice")
    assert now.open_issues == ()
    assert now.interaction_count == 2
    assert cited(now) == {v2, other}
    assert timeless(now) == rebuilt(profiles, tenant)
    assert timeless(profiles.get(tenant, "alice", as_of=datetime.now(UTC))) == timeless(now)

    with pytest.raises(NotFound):
        profiles.get(tenant, "alice", as_of=before_anything)


def test_an_unknown_customer_is_not_found_and_a_bad_id_is_invalid(
    profiles: Profiles, rds: redis.Redis, tenant: str
) -> None:
    with pytest.raises(NotFound) as err:
        profiles.get(tenant, "nobody")
    assert err.value.status == "NOT_FOUND" and "nobody" in err.value.message
    assert not rds.exists(key(tenant, "nobody")), "nothing is cached for nobody"
    for bad in ("", "not an id!"):
        with pytest.raises(InvalidArgument) as invalid:
            profiles.get(tenant, bad)
        assert invalid.value.field == "customer_id"


class SlowHot(HotState):
    """Real Redis, with time between reading a profile and writing it back: races happen."""

    def update_profile(
        self, tenant_id: str, customer_id: str, update: Callable[[str | None], str | None]
    ) -> bool:
        def slowly(current: str | None) -> str | None:
            new = update(current)
            time.sleep(0.02)
            return new

        return super().update_profile(tenant_id, customer_id, slowly)

    def profiles(self, tenant_id: str, customer_ids: Sequence[str]) -> list[str | None] | None:
        read = super().profiles(tenant_id, customer_ids)
        time.sleep(0.02)  # another writer may swap the entry before this one does
        return read

    def swap_profiles(
        self, tenant_id: str, swaps: Mapping[str, tuple[str | None, str]]
    ) -> set[str] | None:
        contended = super().swap_profiles(tenant_id, swaps)
        self.contended += len(contended or ())
        return contended

    contended = 0


def test_concurrent_ingestions_for_one_customer_lose_no_update(
    store: CountingStore,
    interpreter: Interpreter,
    profiles: Profiles,
    rds: redis.Redis,
    stores: EmbeddedStores,
    tenant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = SlowHot(stores.redis_url)
    ingestor = Ingestor(store, slow, interpreter)
    workers, each = 4, 3
    # Worker w stores interactions at hours w, w + workers, ...: in order for a worker,
    # interleaved across workers, so both incremental folds and rebuilds race.
    prepared = [
        [
            prepare(
                ingestor,
                tenant,
                said(f"w{w}-{k}", f"message {k} of {w}", T0 + timedelta(hours=w + workers * k)),
                sentiment="negative" if k % 2 else "positive",
                score=-0.5 if k % 2 else 0.5,
                issue="Late Flight" if k % 2 else None,
            )
            for k in range(each)
        ]
        for w in range(workers)
    ]
    start = threading.Barrier(workers)
    failures: list[BaseException] = []

    def work(batches: list[tuple[Screening, list[object]]]) -> None:
        try:
            start.wait()
            for screening, analyses in batches:
                ingestor.store(screening, analyses, TRACE)  # type: ignore[arg-type]
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in prepared]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slow.close()
    assert failures == []
    assert slow.contended > 0, "the race this test is about did not happen"

    raw = rds.get(key(tenant))
    if raw is None:  # allowed only when an update lost every race and dropped the entry
        assert "stays contended" in caplog.text
    else:
        state = load_state(raw.decode())  # type: ignore[union-attr]
        assert state is not None
        assert timeless(render(state, "alice", SOMETIME)) == rebuilt(profiles, tenant)
    cached = profiles.get(tenant, "alice")
    assert cached.interaction_count == workers * each
    assert timeless(cached) == rebuilt(profiles, tenant)


def test_redis_down_costs_nothing_but_speed(
    store: CountingStore, interpreter: Interpreter, tenant: str
) -> None:
    dead = HotState("redis://127.0.0.1:1/0")
    try:
        ingestor = Ingestor(store, dead, interpreter)
        outcomes = ingestor.ingest(
            tenant,
            [said("a", "My bag is lost", T0), said("b", "hello", T0, customer="bob")],
            TRACE,
        )
        assert [o.error for o in outcomes] == ["", ""]
        p = Profiles(store, dead).get(tenant, "alice")
        assert p.interaction_count == 1
        assert cited(p) <= {outcomes[0].memory_id}
    finally:
        dead.close()


def test_a_malformed_cached_entry_is_rebuilt(
    ingestor: Ingestor, profiles: Profiles, rds: redis.Redis, tenant: str
) -> None:
    first = ingest(ingestor, tenant, said("a", "hello", T0))
    for garbage in (b"\xff\xfe not utf-8", b'{"schema": 1, "interaction_count": "x"}', b"{}"):
        rds.set(key(tenant), garbage)
        assert cited(profiles.get(tenant, "alice")) == {first}
        assert load_state(rds.get(key(tenant)).decode()) is not None  # type: ignore[union-attr]
    # Ingestion over a malformed entry rebuilds it too.
    rds.set(key(tenant), b"garbage")
    second = ingest(ingestor, tenant, said("b", "hello again", T0 + timedelta(hours=1)))
    state = load_state(rds.get(key(tenant)).decode())  # type: ignore[union-attr]
    assert state is not None and state.interaction_count == 2
    assert cited(profiles.get(tenant, "alice")) == {first, second}
