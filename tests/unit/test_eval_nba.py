"""eval_nba: the profile tower, the Telco trainer and serving path, the removal metrics, and
the customer-signal figures reported beside them.

Everything runs on small real subsets (a few dozen simulated held-out customers over real
tweets, a few hundred Telco rows) with the shipped model and the real encoder.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from memcrm.core.types import EMBEDDING_DIM, SIGNAL_NAMES
from memcrm.decisions.catalog import BUILTIN_CATALOG
from memcrm.models import eval_nba, eval_signals
from memcrm.models.encoder import Encoder
from memcrm.models.enrichment import EnrichmentModel
from memcrm.models.eval_nba import (
    TelcoSettings,
    comprehensiveness,
    evaluate_telco,
    removal_drops,
    report,
    score_served,
    telco_packed,
    train_telco,
    true_logit,
)
from memcrm.models.nba import (
    DEFAULT_SCORING_PRECISION,
    MemoryFeatures,
    NbaScorer,
    ProfileFeatures,
    default_artifact_dir,
)
from memcrm.models.nba_enrichment import enrich_texts
from memcrm.models.nba_net import NbaHyperParams, NbaNet, ProfileSpec
from memcrm.models.signals import load_signal_scorer
from memcrm.models.simulator import (
    JourneySimulator,
    SimCustomer,
    SimulatorConfig,
    Split,
    default_tweets_path,
    structural_logits,
)
from memcrm.models.telco import TelcoData, default_telco_path, load_telco, split
from memcrm.models.train_nba import (
    CustomerExplanation,
    Packed,
    explain_customers,
    faithfulness_summary,
    pack,
    predict,
)

SEED = 11
QUICK = (TelcoSettings(epochs=2, learning_rate=3e-3),)


@pytest.fixture(scope="module")
def scorer() -> NbaScorer:
    return NbaScorer()


@pytest.fixture(scope="module")
def telco_data() -> TelcoData:
    if not default_telco_path().is_file():
        pytest.skip(f"shared data set missing: {default_telco_path()}")
    return load_telco()


@dataclass
class Simulated:
    sim: JourneySimulator
    customers: list[SimCustomer]
    data: Packed
    table: torch.Tensor
    explanations: list[CustomerExplanation]


@pytest.fixture(scope="module")
def simulated(scorer: NbaScorer, encoder: Encoder, enrichment_model: EnrichmentModel) -> Simulated:
    if not default_tweets_path().is_file():
        pytest.skip(f"shared data set missing: {default_tweets_path()}")
    sim = JourneySimulator(config=SimulatorConfig(max_tweets_per_kind=300))
    customers = sim.customers(40, Split.HELD_OUT, SEED)
    used = sorted(
        {i.tweet for c in customers for i in c.history}
        | {c.context for c in customers if c.context is not None}
    )
    vectors = encoder.encode([sim.tweets[i].text for i in used])
    table = torch.from_numpy(np.concatenate([np.zeros((1, EMBEDDING_DIM), np.float32), vectors]))
    rows = {tweet: row + 1 for row, tweet in enumerate(used)}
    enrichments = enrich_texts([sim.tweets[i].text for i in used], enrichment_model)
    by_tweet = dict(zip(used, enrichments, strict=True))
    data = pack(customers, rows, BUILTIN_CATALOG, sim.config.max_history, by_tweet)
    explanations = explain_customers(
        scorer.net,
        customers,
        data,
        table,
        BUILTIN_CATALOG,
        SEED,
        keep=lambda n_memories, true: True,
    )
    return Simulated(sim, customers, data, table, explanations)


def _served_memories(sim: Simulated, row: int, keep: np.ndarray) -> MemoryFeatures:
    """The customer's memories with ``keep`` False left out, as serving builds them."""
    m = int(sim.data.mask[row].sum())
    index = np.flatnonzero(keep[:m])
    assert sim.data.enrichment is not None
    return MemoryFeatures(
        embeddings=sim.table[torch.from_numpy(sim.data.tweets[row, index])].numpy(),
        ages_days=sim.data.ages[row, index].astype(np.float64),
        channels=sim.data.channels[row, index],
        directions=sim.data.directions[row, index],
        enrichment=sim.data.enrichment[row, index],
    )


def _served_logits(
    scorer: NbaScorer, memories: MemoryFeatures, context: np.ndarray | None
) -> np.ndarray:
    """Log-odds as serving scores a decision (in its default precision, like the eval)."""
    return scorer.prepare(memories, context, precision=DEFAULT_SCORING_PRECISION).full_logits()


def _context(sim: Simulated, row: int) -> np.ndarray | None:
    if not sim.data.context_mask[row]:
        return None
    vector: np.ndarray = sim.table[int(sim.data.context[row])].numpy()
    return vector


# --- the network ------------------------------------------------------------------------------


def test_without_a_profile_spec_the_network_is_the_shipped_one(scorer: NbaScorer) -> None:
    shipped = torch.load(default_artifact_dir() / "nba.pt", map_location="cpu", weights_only=True)
    hp = NbaHyperParams.from_dict(scorer.manifest["hyperparameters"])
    net = NbaNet(torch.zeros(len(BUILTIN_CATALOG), EMBEDDING_DIM), hp, None, scorer.enrichment_spec)
    assert list(net.state_dict()) == list(shipped)
    assert all(net.state_dict()[k].shape == v.shape for k, v in shipped.items())
    with pytest.raises(ValueError, match="without profile features"):
        net.encode_profile(torch.zeros(1, 2), torch.zeros(1, 1, dtype=torch.long))
    # The optional parts only add parameters, after all of the plain network's.
    plain = NbaNet(torch.zeros(len(BUILTIN_CATALOG), EMBEDDING_DIM), NbaHyperParams())
    assert list(plain.state_dict()) == [k for k in shipped if not k.startswith("enrichment_")]


def test_the_shipped_scorer_refuses_profile_features(scorer: NbaScorer) -> None:
    assert scorer.profile_spec is None
    profile = ProfileFeatures(np.zeros(3), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="without profile features"):
        scorer.prepare(MemoryFeatures.empty(), None, profile)
    # The old two-argument call is unchanged.
    assert scorer.prepare(MemoryFeatures.empty(), None).full_logits().shape == (6,)


def test_a_profile_network_needs_its_profile_and_standardizes_inside() -> None:
    spec = ProfileSpec(n_numeric=2, cardinalities=(3, 4), embedding_dim=2, hidden=8)
    assert ProfileSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    torch.manual_seed(0)
    net = NbaNet(torch.zeros(1, EMBEDDING_DIM), NbaHyperParams(), spec).eval()
    assert net.profile is not None and net.head_profile is not None
    args = (
        torch.zeros(2, 0, EMBEDDING_DIM),
        torch.zeros(2, 0),
        torch.zeros(2, 0, dtype=torch.long),
        torch.zeros(2, 0, dtype=torch.long),
        torch.zeros(2, 0, dtype=torch.bool),
        torch.zeros(2, EMBEDDING_DIM),
        torch.zeros(2, dtype=torch.bool),
    )
    with pytest.raises(ValueError, match="needs profile features"):
        net(*args)
    numeric = torch.tensor([[10.0, -3.0], [10.0, -3.0]])
    codes = torch.tensor([[1, 2], [1, 3]])
    out = net(*args, numeric, codes)
    assert out.shape == (2, 1) and not torch.equal(out[0], out[1])
    # Raw inputs are standardized with the stored statistics: shifting both changes nothing.
    net.profile.set_scaling(torch.tensor([5.0, 1.0]), torch.tensor([2.0, 4.0]))
    shifted = net(*args, numeric, codes)
    net.profile.set_scaling(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]))
    direct = net(*args, (numeric - torch.tensor([5.0, 1.0])) / torch.tensor([2.0, 4.0]), codes)
    torch.testing.assert_close(shifted, direct)
    with pytest.raises(ValueError, match="positive"):
        net.profile.set_scaling(torch.zeros(2), torch.zeros(2))


# --- Telco: our trainer and the serving path --------------------------------------------------


def test_the_same_trainer_learns_churn_from_profiles(telco_data: TelcoData, tmp_path: Path) -> None:
    parts = split(telco_data)
    rows, held = parts.fit[:1500], parts.validation[:500]
    settings = TelcoSettings(epochs=4, learning_rate=3e-3)
    net, encoding = train_telco(telco_data, rows, settings, SEED)
    again, _ = train_telco(telco_data, rows, settings, SEED)
    assert all(
        torch.equal(a, b)
        for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True)
    )
    trained = predict(net, telco_packed(telco_data, held, encoding), torch.zeros(1, EMBEDDING_DIM))
    auc = eval_nba._auc(telco_data.churn[held], trained[:, 0])
    assert auc > 0.78  # a profile model that learned nothing scores about 0.5

    scores, served = score_served(net, encoding, telco_data, held, tmp_path / "artifact")
    assert served.profile_spec == net.profile_spec
    assert served.version.startswith("telco-churn-") and served.action_ids == ("churn",)
    np.testing.assert_allclose(scores, trained[:, 0], atol=1e-4)
    numeric, codes = encoding.encode(telco_data, held[:3])
    for i in range(3):
        profile = ProfileFeatures(numeric[i].astype(np.float64), codes[i])
        one = served.prepare(MemoryFeatures.empty(), None, profile).full_logits()
        assert one[0] == pytest.approx(scores[i], abs=1e-12)
    with pytest.raises(ValueError, match="needs profile features"):
        served.prepare(MemoryFeatures.empty(), None)


def test_telco_evaluation_is_deterministic_and_compares_on_one_split(
    telco_data: TelcoData,
) -> None:
    first = evaluate_telco(telco_data.path, seed=SEED, grid=QUICK)
    second = evaluate_telco(telco_data.path, seed=SEED, grid=QUICK)
    first.pop("timing_seconds"), second.pop("timing_seconds")
    assert first == second
    assert set(first["baselines"]) == {"logistic_regression", "gradient_boosting"}
    assert first["better_baseline_test_roc_auc"] == max(
        b["test_roc_auc"] for b in first["baselines"].values()
    )
    assert first["gap_to_better_baseline"] == pytest.approx(
        first["better_baseline_test_roc_auc"] - first["ours"]["test_roc_auc"]
    )
    rows = first["data"]["rows_per_split"]
    assert rows["train"] + rows["test"] == first["data"]["rows"] == len(telco_data)
    assert 0.5 < first["ours"]["test_roc_auc"] <= 1.0


# --- simulated customers: explanations and removals -------------------------------------------


def test_removing_memories_is_leaving_them_out_of_the_served_set(
    simulated: Simulated, scorer: NbaScorer
) -> None:
    checked = 0
    for explanation in simulated.explanations:
        m = explanation.n_memories
        if m < 4:
            continue
        drops = removal_drops(explanation)
        row = explanation.row
        context = _context(simulated, row)
        column = explanation.action
        every = _served_memories(simulated, row, np.ones(m, bool))
        full = _served_logits(scorer, every, context)[column]
        removed = []
        for triple in itertools.combinations(range(m), 3):
            keep = np.ones(m, bool)
            keep[list(triple)] = False
            removed.append(
                _served_logits(scorer, _served_memories(simulated, row, keep), context)[column]
            )
        served_drops = full - np.asarray(removed)
        # In float32 a forward pass of all triples and one of a single set round differently
        # (~1e-7); leaving out the wrong memories would move log-odds by orders more.
        assert drops.random == pytest.approx(served_drops.mean(), abs=1e-5)
        assert drops.best == pytest.approx(served_drops.max(), abs=1e-5)
        top = np.argsort(-explanation.values[:m], kind="stable")[:3]
        keep = np.ones(m, bool)
        keep[top] = False
        direct = (
            full - _served_logits(scorer, _served_memories(simulated, row, keep), context)[column]
        )
        assert drops.top == pytest.approx(direct, abs=1e-5)
        assert drops.best >= drops.top - 1e-12
        checked += 1
    assert checked >= 5


def test_ground_truth_drops_use_the_structural_equations(simulated: Simulated) -> None:
    explanation = next(e for e in simulated.explanations if e.n_memories >= 5)
    customer = simulated.customers[explanation.row]
    action_id = BUILTIN_CATALOG[explanation.action].action_id
    truth = true_logit(simulated.sim, customer, action_id)
    assert truth(np.ones(explanation.n_memories, bool)) == pytest.approx(customer.logits[action_id])
    drops = removal_drops(explanation, 3, truth)
    history = customer.history
    expected = [
        customer.logits[action_id]
        - structural_logits(
            simulated.sim.loads(
                [h for j, h in enumerate(history) if j not in triple], customer.context
            )
        )[action_id]
        for triple in itertools.combinations(range(len(history)), 3)
    ]
    assert drops.true_random == pytest.approx(float(np.mean(expected)))
    assert drops.true_best == pytest.approx(float(np.max(expected)))
    with pytest.raises(ValueError, match="more than 3"):
        removal_drops(next(e for e in simulated.explanations if e.n_memories <= 3))


def test_comprehensiveness_and_precision_aggregate_the_customers(simulated: Simulated) -> None:
    eligible = [e for e in simulated.explanations if e.n_memories >= 4]
    drops = [removal_drops(e) for e in eligible]
    summary = comprehensiveness(drops)
    assert summary["customers"] == len(eligible)
    assert summary["mean_drop_top_k"] == pytest.approx(np.mean([d.top for d in drops]))
    assert summary["ratio"] == pytest.approx(
        summary["mean_drop_top_k"] / summary["mean_drop_random_k"]
    )
    assert summary["ceiling"]["mean_drop_best_k"] >= summary["mean_drop_top_k"]
    assert sum(g["customers"] for g in summary["by_number_of_memories"].values()) == len(drops)
    assert comprehensiveness([])["ratio"] is None

    with_cause = [e for e in simulated.explanations if e.true_causes]
    precision = faithfulness_summary(simulated.explanations)
    hits = [int(np.argmax(np.abs(e.values))) in e.true_causes for e in with_cause]
    assert precision["customers_with_a_true_cause"] == len(with_cause)
    assert precision["top_player_is_true_cause_rate"] == pytest.approx(np.mean(hits))
    # SHAP must find true causes far more often than a random player would.
    assert precision["top_player_is_true_cause_rate"] > precision["chance_rate"] + 0.15


def test_report_is_one_json_document_with_consistent_targets(
    scorer: NbaScorer, telco_data: TelcoData
) -> None:
    signals = load_signal_scorer()
    result = report(
        scorer,
        default_tweets_path(),
        telco_data.path,
        seed=SEED,
        customers=30,
        explained=30,
        grid=QUICK,
        signals=signals,
    )
    parsed = json.loads(json.dumps(result))
    targets = parsed["targets"]
    assert set(targets) == {
        "simulator_explanation_precision_at_1",
        "simulator_explanation_comprehensiveness_ratio",
        "telco_roc_auc",
        "telco_gap_to_better_baseline",
    }
    assert parsed["meets_target"] == all(t["meets_target"] for t in targets.values())
    precision = targets["simulator_explanation_precision_at_1"]
    assert precision["meets_target"] == (precision["value"] >= precision["target"])
    auc = targets["telco_roc_auc"]
    assert auc["value"] == parsed["telco"]["ours"]["test_roc_auc"]
    assert auc["meets_target"] == (auc["value"] >= 0.84)
    assert parsed["model"]["sha256"] == scorer.sha256
    assert parsed["simulator"]["data"]["held_out_customers"] == 30
    assert (
        "at least 4 memories"
        in parsed["simulator"]["explanations"]["comprehensiveness"]["eligibility"]
    )
    assert len(parsed["telco"]["data"]["file_sha256"]) == 64

    # The signal model's held-out figures ride along, without targets of their own.
    assert list(parsed)[-2:] == ["signals", "timing_seconds"]
    section = parsed["signals"]
    assert "without targets" in section["report"]
    assert section["model"]["sha256"] == signals.sha256 != scorer.sha256
    assert section["data"]["held_out_customers"] == 30
    assert section["data"]["customer_seed"] == SEED
    assert section["data"]["file_sha256"] == parsed["simulator"]["data"]["file_sha256"]
    assert section["data"]["held_out_tweets_enriched"] > 0  # the model reads enrichment
    assert section["explanations"]["explained_customers"] == 30
    assert list(section["per_signal"]) == list(SIGNAL_NAMES)
    for figures in section["per_signal"].values():
        assert 0.0 <= figures["roc_auc"] <= 1.0 and 0.0 <= figures["roc_auc_true_logit"] <= 1.0
        assert {"precision_at_1", "chance_rate"} <= set(figures["explanations"])
    assert not any("signal" in name for name in targets)
    assert set(parsed["reported_without_target"]) == {
        "simulator_roc_auc",
        "simulator_top_action_accuracy",
    }
    timing = parsed["timing_seconds"]
    assert set(timing) == {"simulator", "telco", "signals", "total"}
    # The same numbers as eval_signals' own report of those customers (timings apart).
    alone = eval_signals.evaluate_signals(
        signals, default_tweets_path(), customers=30, explained=30, seed=SEED
    )
    alone.pop("timing_seconds"), section.pop("timing_seconds")
    assert section == {"report": section["report"], **json.loads(json.dumps(alone))}
