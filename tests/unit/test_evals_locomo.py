"""The LoCoMo memory benchmark's pure parts on small conversations written here: session dates,
turn texts, evidence normalisation, recall@k, percentiles, the BM25 and dense baselines and
the report arithmetic. The shared data is read only by the last test, and only if present."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memcrm.evals.baselines import Bm25Ranker, DenseRanker, top_k
from memcrm.evals.eval_memory import (
    ServiceRun,
    _to_proto,
    build_report,
    counts_report,
    default_locomo_dir,
    evidence_report,
    locomo_dir,
    targets_report,
)
from memcrm.evals.locomo import (
    EXACT,
    MALFORMED,
    NO_SUCH_TURN,
    NORMALISED,
    canonical_dia_id,
    format_turn_text,
    interaction_records,
    load_conversation,
    load_conversations,
    normalise_evidence,
    parse_session_datetime,
)
from memcrm.evals.metrics import Ranked, percentile, recall_at_k, recall_table
from memcrm.models.encoder import Encoder
from memcrm.v1 import common_pb2


def synthetic() -> dict[str, Any]:
    """Two speakers, two sessions written out of order (10 before 2), a dated session
    without turns, one shared photo and questions of every category with evidence quirks."""
    return {
        "speaker_a": "Ana",
        "speaker_b": "Ben",
        "session_10_date_time": "12:09 am on 3 February, 2024",
        "session_10": [
            {"speaker": "Ben", "dia_id": "D10:1", "text": "I adopted a puppy named Rex."},
            {
                "speaker": "Ana",
                "dia_id": "D10:2",
                "text": "So cute!",
                "blip_caption": "a photo of a small brown dog on a sofa",
                "img_url": ["http://example.invalid/dog.jpg"],
            },
        ],
        "session_2_date_time": "3:41 pm on 6 May, 2022",
        "session_2": [
            {"speaker": "Ana", "dia_id": "D2:1", "text": "I started a pottery class."},
            {"speaker": "Ben", "dia_id": "D2:2", "text": "  Nice, what did you make?  "},
            {"speaker": "Ana", "dia_id": "D2:3", "text": "A blue bowl for my mother."},
        ],
        "session_3_date_time": "4:04 pm on 20 January, 2024",
        "qa": [
            {"question": "What did Ana make?", "evidence": ["D2:3"], "category": 4},
            {"question": "When?", "evidence": ["D2:1; D10:1"], "category": 2},
            {"question": "Pets?", "evidence": ["D:10:1", "D10:1", "D10:9"], "category": 1},
            {"question": "Opinion?", "evidence": [], "category": 3},
            {"question": "Ben's bowl?", "evidence": [], "category": 5},
            {"question": "Broken", "evidence": ["D"], "category": 4},
        ],
    }


# --- dates and texts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3:41 pm on 6 May, 2022", datetime(2022, 5, 6, 15, 41, tzinfo=UTC)),
        ("12:07 am on 14 September, 2022", datetime(2022, 9, 14, 0, 7, tzinfo=UTC)),
        ("12:30 pm on 1 January, 2024", datetime(2024, 1, 1, 12, 30, tzinfo=UTC)),
        ("10:22 am on 25 June, 2022", datetime(2022, 6, 25, 10, 22, tzinfo=UTC)),
        ("9:05 PM on 2 Dec, 2022", datetime(2022, 12, 2, 21, 5, tzinfo=UTC)),
    ],
)
def test_parse_session_datetime(text: str, expected: datetime) -> None:
    assert parse_session_datetime(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "13:00 pm on 6 May, 2022", "3:41 pm on 31 February, 2022", "3:41 on 6 May"],
)
def test_parse_session_datetime_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_session_datetime(text)


def test_format_turn_text() -> None:
    assert format_turn_text("Ana", "Hello there") == "Ana: Hello there"
    assert (
        format_turn_text("Ana", " So cute! ", "a photo of a dog")
        == "Ana: So cute! [shares a photo: a photo of a dog]"
    )
    assert format_turn_text("Ana", "Hi", "   ") == "Ana: Hi"
    assert format_turn_text("Ana", "Hi", None) == "Ana: Hi"


# --- loading ------------------------------------------------------------------------------


def test_load_conversation_orders_sessions_and_turns() -> None:
    conv = load_conversation("7", synthetic())
    assert [t.dia_id for t in conv.turns] == ["D2:1", "D2:2", "D2:3", "D10:1", "D10:2"]
    start = datetime(2022, 5, 6, 15, 41, tzinfo=UTC)
    assert [t.occurred_at for t in conv.turns[:3]] == [
        start + timedelta(seconds=i) for i in range(3)
    ]
    assert conv.turns[3].occurred_at == datetime(2024, 2, 3, 0, 9, tzinfo=UTC)
    assert conv.turns[1].text == "Ben: Nice, what did you make?"
    assert (
        conv.turns[4].text
        == "Ana: So cute! [shares a photo: a photo of a small brown dog on a sofa]"
    )
    assert [t.has_photo for t in conv.turns] == [False, False, False, False, True]
    assert conv.speakers == ("Ana", "Ben")
    assert conv.sessions == 2
    assert conv.dated_sessions_without_turns == 1
    assert conv.sessions_out_of_order() == 0
    assert [q.category_name for q in conv.questions] == [
        "single_hop",
        "temporal",
        "multi_hop",
        "open_domain",
        "adversarial",
        "single_hop",
    ]
    assert [q.evaluated for q in conv.questions] == [True, True, True, True, False, True]
    assert [q.scorable for q in conv.questions] == [True, True, True, False, False, False]


def test_sessions_out_of_order_are_counted() -> None:
    data = synthetic()
    data["session_10_date_time"] = "1:00 pm on 1 January, 2020"
    assert load_conversation("x", data).sessions_out_of_order() == 1


def test_load_conversation_refuses_what_it_cannot_read() -> None:
    no_date = synthetic()
    del no_date["session_2_date_time"]
    with pytest.raises(ValueError, match="session_2"):
        load_conversation("x", no_date)
    bad_date = synthetic()
    bad_date["session_2_date_time"] = "sometime in May"
    with pytest.raises(ValueError, match="sometime in May"):
        load_conversation("x", bad_date)
    twice = synthetic()
    twice["session_2"][1]["dia_id"] = "D2:1"
    with pytest.raises(ValueError, match="twice"):
        load_conversation("x", twice)


def test_interaction_records_are_unique_per_customer() -> None:
    conv = load_conversation("7", synthetic())
    records = interaction_records(conv, "locomo-7")
    assert [r.interaction_id for r in records][:2] == ["locomo-7/D2:1", "locomo-7/D2:2"]
    assert {r.customer_id for r in records} == {"locomo-7"}
    assert records[4].attributes == {"speaker": "Ana", "dia_id": "D10:2"}
    assert records[4].text == conv.turns[4].text
    other = interaction_records(conv, "locomo-8")
    assert not {r.interaction_id for r in records} & {r.interaction_id for r in other}

    message = _to_proto(records[4])
    assert message.interaction_id == "locomo-7/D10:2"
    assert message.channel == common_pb2.CHANNEL_CHAT
    assert message.occurred_at.ToDatetime(tzinfo=UTC) == conv.turns[4].occurred_at
    assert dict(message.attributes) == {"speaker": "Ana", "dia_id": "D10:2"}


def test_load_conversations_numeric_order(tmp_path: Path) -> None:
    for name in ("43", "9", "26"):
        (tmp_path / f"{name}.json").write_text(json.dumps(synthetic()))
    assert [c.name for c in load_conversations(tmp_path)] == ["9", "26", "43"]
    with pytest.raises(FileNotFoundError):
        load_conversations(tmp_path / "missing")
    (tmp_path / "locomo-dev").mkdir()
    assert locomo_dir(tmp_path) == tmp_path / "locomo-dev"
    assert locomo_dir(tmp_path / "locomo-dev") == tmp_path / "locomo-dev"


# --- evidence -----------------------------------------------------------------------------


def test_canonical_dia_id() -> None:
    assert canonical_dia_id("D2:4") == "D2:4"
    assert canonical_dia_id("D:7:12") == "D7:12"
    assert canonical_dia_id(" d 03 : 07 ") == "D3:7"
    for bad in ("D", "D2", "2:4", "D2:4:1", "session 2 turn 4", ""):
        assert canonical_dia_id(bad) is None


def test_normalise_evidence() -> None:
    known = {"D1:1", "D1:2", "D2:4", "D3:1", "D7:12"}
    ev = normalise_evidence(["D1:1", "D2:4; D3:1", "D:7:12", "D6:19", "D", "D1:1"], known)
    outcomes = [(r.raw, r.canonical, r.outcome) for r in ev.refs]
    assert outcomes == [
        ("D1:1", "D1:1", EXACT),
        ("D2:4; D3:1", "D2:4", NORMALISED),
        ("D2:4; D3:1", "D3:1", NORMALISED),
        ("D:7:12", "D7:12", NORMALISED),
        ("D6:19", "D6:19", NO_SUCH_TURN),
        ("D", None, MALFORMED),
        ("D1:1", "D1:1", EXACT),
    ]
    assert ev.turn_ids == ("D1:1", "D2:4", "D3:1", "D7:12")
    assert [r.raw for r in ev.unresolved] == ["D6:19", "D"]


def test_normalise_evidence_whitespace_lists_and_odd_entries() -> None:
    known = {"D1:1", "D1:2"}
    assert normalise_evidence(["D1:1 D1:2"], known).turn_ids == ("D1:1", "D1:2")
    assert normalise_evidence(["D1:1,D1:2;"], known).turn_ids == ("D1:1", "D1:2")
    odd = normalise_evidence(["", "D1 and D2", 7], known)
    assert [r.outcome for r in odd.refs] == [MALFORMED, MALFORMED, MALFORMED]
    assert odd.turn_ids == ()
    assert normalise_evidence([], known).refs == ()


def test_evidence_and_counts_reports() -> None:
    conv = load_conversation("7", synthetic())
    ev = evidence_report([conv])
    assert ev["references_by_outcome"] == {
        EXACT: 2,  # D2:3, D10:1 (the adversarial question's are not counted)
        NORMALISED: 3,  # D2:1 and D10:1 from the ';' list, D:10:1
        NO_SUCH_TURN: 1,  # D10:9
        MALFORMED: 1,  # D
    }
    assert ev["questions_scored_on_part_of_their_evidence"] == 1
    assert ev["questions_without_resolvable_evidence_not_scored"] == 2
    outcomes = sorted(q["outcome"] for q in ev["quirks"])
    assert outcomes.count("question_not_scored_no_evidence_given") == 1
    assert outcomes.count("question_not_scored_no_evidence_resolved") == 1

    counts = counts_report([conv])
    assert counts["turns"] == 5
    assert counts["turns_with_photo_caption"] == 1
    assert counts["questions_in_files"] == 6
    assert counts["questions_skipped"] == {"adversarial": 1}
    assert counts["questions_asked"] == 5
    assert counts["questions_asked_per_category"] == {
        "multi_hop": 1,
        "open_domain": 1,
        "single_hop": 2,
        "temporal": 1,
    }
    assert counts["questions_scored"] == 3
    assert counts["session_dates_without_turns"] == 1


# --- metrics ------------------------------------------------------------------------------


def test_recall_at_k() -> None:
    ranked = ["a", "b", "c", "d"]
    assert recall_at_k(ranked, ["b", "d", "x"], 1) == 0.0
    assert recall_at_k(ranked, ["b", "d", "x"], 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranked, ["b", "d", "x"], 4) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, ["b", "b"], 2) == 1.0  # a repeated id counts once
    assert recall_at_k(ranked, ["d"], 100) == 1.0
    assert recall_at_k([], ["d"], 5) == 0.0
    with pytest.raises(ValueError):
        recall_at_k(ranked, [], 5)
    with pytest.raises(ValueError):
        recall_at_k(ranked, ["a"], 0)


def test_recall_table_averages_over_questions() -> None:
    rows = [
        Ranked("single_hop", ("a",), ("a", "b")),
        Ranked("single_hop", ("c",), ("a", "b")),
        Ranked("multi_hop", ("a", "c"), ("b", "c", "a")),
    ]
    table = recall_table(rows, (1, 3))
    assert table["recall_at_1"] == {"overall": round(1 / 3, 4), "multi_hop": 0.0, "single_hop": 0.5}
    assert table["recall_at_3"] == {"overall": round(2 / 3, 4), "multi_hop": 1.0, "single_hop": 0.5}
    with pytest.raises(ValueError):
        recall_table([], (5,))


def test_percentile() -> None:
    samples = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(samples, 0.0) == 1.0
    assert percentile(samples, 0.5) == 3.0
    assert percentile(samples, 0.99) == 5.0
    assert percentile(samples, 1.0) == 5.0
    assert percentile([7.0], 0.5) == 7.0
    assert percentile([float(i) for i in range(1, 201)], 0.99) == 198.0
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile(samples, 1.5)


def test_targets_report() -> None:
    ok = targets_report(0.75, {"bm25": 0.60, "dense": 0.50}, 20.0)
    assert ok["best_baseline"] == "bm25"
    assert ok["required_recall_at_10"] == 0.72
    assert all(ok["checks"].values())
    close = targets_report(0.71, {"bm25": 0.60, "dense": 0.50}, 20.0)
    assert close["checks"]["recall_at_10_at_least_0.70"]
    assert not close["checks"]["recall_at_10_beats_best_baseline_by_0.12"]
    slow = targets_report(0.90, {"bm25": 0.40, "dense": 0.50}, 25.0)
    assert slow["best_baseline"] == "dense"
    assert not slow["checks"]["recall_p50_below_25_ms"]
    low = targets_report(0.65, {"bm25": 0.40, "dense": 0.45}, 5.0)
    assert low["required_recall_at_10"] == 0.70
    assert not low["checks"]["recall_at_10_at_least_0.70"]


def test_build_report_is_one_json_document() -> None:
    conv = load_conversation("7", synthetic())
    scored = [q for q in conv.questions if q.scorable]
    perfect = [Ranked(q.category_name, q.evidence.turn_ids, q.evidence.turn_ids) for q in scored]
    useless = [Ranked(q.category_name, q.evidence.turn_ids, ()) for q in scored]
    run = ServiceRun(ranked=perfect, latencies_ms=[3.0, 4.0, 30.0], model_versions={"m-1"})
    report = build_report(
        [conv], Path("/data"), run, {"bm25": useless, "dense": useless}, {"top_k": 10}
    )
    assert json.loads(json.dumps(report)) == report
    assert report["memcrm"]["recall_at_10"]["overall"] == 1.0
    assert report["baselines"]["bm25"]["recall_at_5"]["overall"] == 0.0
    assert report["memcrm"]["recall_latency_ms"]["p50"] == 4.0
    assert report["memcrm"]["recall_latency_ms"]["p99"] == 30.0
    assert report["meets_target"] is True
    assert report["model_version"] == ["m-1"]
    slow = ServiceRun(ranked=perfect, latencies_ms=[30.0, 40.0])
    slow_report = build_report([conv], Path("/d"), slow, {"bm25": useless, "dense": useless}, {})
    assert slow_report["meets_target"] is False


# --- baselines ----------------------------------------------------------------------------

TURNS = [
    "Ana: I started a pottery class on Tuesdays.",
    "Ben: I adopted a puppy named Rex last week.",
    "Ana: My sister is getting married in Lisbon next spring.",
    "Ben: Work has been stressful, the quarterly audit is due.",
    "Ana: I ran a charity half marathon for mental health on Sunday.",
]


def test_top_k_breaks_ties_by_position() -> None:
    assert top_k(np.array([0.1, 0.5, 0.5, 0.9, 0.0]), 3) == [3, 1, 2]
    assert top_k(np.zeros(4), 10) == [0, 1, 2, 3]


def test_bm25_ranks_the_obvious_turn_first() -> None:
    bm25 = Bm25Ranker(TURNS)
    assert bm25.rank("Where is the wedding of Ana's sister?", 5)[0] == 2
    assert bm25.rank("What is the name of Ben's puppy?", 5)[0] == 1
    assert bm25.rank("the audit", 2)[0] == 3
    assert sorted(bm25.rank("What did Ana run for?", 5)) == [0, 1, 2, 3, 4]
    # Nothing but stop words and unknown words: no crash, every turn scores 0, in order.
    assert bm25.rank("the of and zzzqqq", 3) == [0, 1, 2]
    assert bm25.settings["stopwords"] == "en"


def test_dense_ranks_the_paraphrased_turn_first(encoder: Encoder) -> None:
    dense = DenseRanker(encoder, TURNS)
    queries = [
        "Which pet dog does Ben have?",
        "Who is having a wedding abroad?",
        "What ceramics lessons is Ana taking?",
        "Why is Ben under pressure at his job?",
    ]
    assert [ranks[0] for ranks in dense.rank_many(queries, 3)] == [1, 2, 0, 3]
    assert dense.rank("running a race for charity", 1) == [4]
    assert dense.rank_many([], 3) == []


# --- the shared data, if present ----------------------------------------------------------

SHARED = default_locomo_dir()  # MEMCRM_DATA_DIR/locomo-dev


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared LoCoMo data not present")
def test_shared_locomo_loads_and_bm25_reproduces_the_documented_figures() -> None:
    conversations = load_conversations(SHARED)
    assert len(conversations) == 5
    for conv in conversations:
        assert conv.turns and conv.sessions_out_of_order() == 0
        assert all(canonical_dia_id(t.dia_id) == t.dia_id for t in conv.turns)
    rows = []
    for conv in conversations:
        ids = [t.dia_id for t in conv.turns]
        bm25 = Bm25Ranker([t.text for t in conv.turns])
        for q in conv.questions:
            if q.scorable:
                ranked = tuple(ids[i] for i in bm25.rank(q.question, 10))
                rows.append(Ranked(q.category_name, q.evidence.turn_ids, ranked))
    assert len(rows) == 760
    table = recall_table(rows, (5, 10))
    # shared/data/README.md: BM25 (bm25s, English stop words) recall@5 0.445, recall@10 0.526.
    assert table["recall_at_5"]["overall"] == pytest.approx(0.445, abs=0.01)
    assert table["recall_at_10"]["overall"] == pytest.approx(0.526, abs=0.01)
