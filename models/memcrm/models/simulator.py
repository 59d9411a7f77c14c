"""A seeded customer-journey simulator over real airline tweets, with known causes.

Why: memcrm has no logged next-best-action outcomes yet, and a propensity model whose SHAP
explanations we want to check needs ground truth about *which* interactions made an action
work. The simulator builds synthetic customers out of REAL customer texts (the "Twitter US
Airline Sentiment" data set, ``Tweets.csv``) and draws outcomes from a documented causal
structure, so the model can be trained on the texts' meaning and evaluated on customers whose
texts it never saw, and explanations can be scored against the true causes.

Texts and labels
    Each tweet (deduplicated on ``tweet_id``; only rows whose ``airline_sentiment_confidence``
    and, for negative tweets, ``negativereason_confidence`` are >= ``min_confidence``) gets a
    *kind* from its crowd labels:

    ``luggage``        negative, reason Lost Luggage or Damaged Luggage
    ``disruption``     negative, reason Cancelled Flight, Late Flight or Flight Booking Problems
    ``service``        negative, reason Customer Service Issue
    ``other_negative`` any other negative tweet (Bad Flight, longlines, Can't Tell, ...)
    ``positive``       positive sentiment
    ``neutral``        neutral sentiment: filler that causes nothing

Customers
    A customer has a latent persona (bag trouble, disrupted, service fight, happy, mixed) that
    sets the mix of kinds in their history; the persona itself causes nothing, it only makes
    kinds co-occur the way they do in real journeys (a confounder the model must not rely on
    beyond what the texts say). The history has 1-12 interactions (uniform), each a real tweet
    of the drawn kind with an age of ``max_age_days * u**2`` days for ``u`` uniform in [0, 1]
    (recent interactions are the more common, median about 3 months), a channel (mostly
    social, every channel present) and a direction (85 % inbound, 10 % outbound, 5 %
    unspecified). The current context is a real tweet drawn the same way, or empty (30 %).
    Tweets' real timestamps (all within 16-24 Feb 2015) are not used; ages are simulated.

Causal structure (the ground truth)
    Every interaction gets a weight ``w = 0.5 ** (age / half_life_days) * m(channel)``:
    older interactions matter less (half-life 30 days: an old complaint is probably settled);
    ``m = 1.5`` for VOICE and TICKET (the customer went to the trouble of calling or filing a
    ticket), else 1. OUTBOUND interactions (the company speaking) and ``neutral`` tweets have
    weight 0: they cause nothing. The context counts as a fresh inbound interaction (w = 1).
    Summing weights per kind gives loads L (luggage), D (disruption), S (service),
    O (other negative), P (positive). With ``sat(x) = 1 - exp(-x)`` (diminishing returns),
    the log-odds that each action succeeds are::

        apology_credit      -1.6 + 1.4 sat(L) + 0.9 sat(D) + 0.7 sat(S) + 0.4 sat(O)
        rebooking_assist    -2.4 + 3.4 sat(D)
        escalate_to_agent   -2.4 + 3.8 sat(max(0, S - 0.8))     (needs repeated complaints)
        baggage_trace       -2.6 + 3.8 sat(L)
        seat_upgrade_offer  -1.8 + 2.8 sat(P) - 2.2 sat(L) - 1.2 sat(D + S + O)
        loyalty_thanks      -0.8 + 2.4 sat(P) - 1.0 sat(L + D + S + O)

    Outcomes are independent Bernoulli draws with ``p = sigmoid(log-odds)`` for every catalog
    action (full feedback: a simplification; real logs show one action per decision). The best
    action is the one with the highest ``p * value``. The true causes of an action are the
    interactions with weight > 0 whose kind enters its equation (``DRIVERS``); whether the
    context is a cause is recorded separately.

Customer signals (a second, separate causal structure)
    Besides the actions' outcomes every customer has three *signals*: facts about the customer
    that a CRM would want to predict before anyone writes in. They are about the customer, not
    about a message, so they read the history only (the current context does not enter them)::

        churn_risk           P(the customer leaves us within 90 days)
                             -2.6 + 1.6 sat(L) + 1.3 sat(D) + 2.6 sat(S) + 0.8 sat(O) - 2.0 sat(P)
        purchase_propensity  P(the customer buys a ticket or an extra within 30 days)
                             -1.9 + 3.0 sat(P) - 1.4 sat(L + D + S + O)
        support_need         P(the customer contacts support within 7 days)
                             -3.0 + 3.6 sat(L7) + 3.1 sat(D7) + 2.6 sat(S7)

    L, D, S, O, P are the loads above (30-day half-life) over the history alone. What a CRM
    believes: a customer leaves after problems that were not put right, above all a fight with
    customer service, and stays when the trips went well; happy customers buy again and any
    recent trouble puts them off; a customer comes back to support while an issue is still
    open, and issues with bags, flights and service are the ones that stay open, so
    ``support_need`` reads L7, D7 and S7: the same loads with a 7-day half-life (the weight
    ``0.5 ** (age / 7) * m(channel)``, same channel and direction rules), because last week's
    lost bag brings a call this week and last season's does not. On simulated customers the
    base rates are about 17 % (churn), 17 % (purchase) and 14 % (support), and the true
    log-odds rank the outcomes with a ROC-AUC of about 0.79 each (the ceiling for any model).

    Outcomes are Bernoulli draws with ``p = sigmoid(log-odds)`` from their OWN generator,
    seeded by ``(seed, split, SIGNAL_STREAM)``: the action outcomes and every other draw above
    are exactly what they were before signals existed. Signals are independent of the action
    outcomes given the history: nothing the company does changes them here (a simplification).
    ``SIGNAL_DRIVERS`` lists the kinds in each signal's equation; a signal's true causes are the
    history interactions with weight > 0 whose kind is one of its drivers, however small the
    weight (a year-old bag complaint is, barely, a cause of ``support_need``).

Held-out split
    A tweet belongs to the held-out pool when ``sha256("split:<tweet_id>") mod 10`` is in
    ``held_out_buckets`` (20 % by default). Training customers are built only from training
    tweets and held-out customers only from held-out tweets, so evaluation never sees a text the
    model was trained on. Everything random comes from a ``numpy.random.Generator`` seeded by
    ``(seed, split)``, except the signal outcomes (their own generator, see above).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from memcrm.core.settings import Settings
from memcrm.core.types import Channel, Direction
from memcrm.decisions.catalog import BUILTIN_CATALOG, Action

DATA_SET = "Twitter US Airline Sentiment (CrowdFlower / Figure Eight), CC BY-NC-SA 4.0"


def default_tweets_path() -> Path:
    """``Tweets.csv`` under ``MEMCRM_DATA_DIR`` (default ``../shared/data``)."""
    data_dir = Settings().data_dir
    if not data_dir.is_absolute():
        # Relative to the source checkout, not to wherever the command runs.
        data_dir = Path(__file__).resolve().parents[3] / data_dir
    return data_dir / "airline-tweets" / "Tweets.csv"


class Kind(StrEnum):
    LUGGAGE = "luggage"
    DISRUPTION = "disruption"
    SERVICE = "service"
    OTHER_NEGATIVE = "other_negative"
    POSITIVE = "positive"
    NEUTRAL = "neutral"


class Split(StrEnum):
    TRAIN = "train"
    HELD_OUT = "held_out"


NEGATIVE_KINDS = frozenset({Kind.LUGGAGE, Kind.DISRUPTION, Kind.SERVICE, Kind.OTHER_NEGATIVE})

# Which kinds enter each action's structural equation (see the module docstring).
DRIVERS: Mapping[str, frozenset[Kind]] = {
    "apology_credit": NEGATIVE_KINDS,
    "rebooking_assist": frozenset({Kind.DISRUPTION}),
    "escalate_to_agent": frozenset({Kind.SERVICE}),
    "baggage_trace": frozenset({Kind.LUGGAGE}),
    "seat_upgrade_offer": NEGATIVE_KINDS | {Kind.POSITIVE},
    "loyalty_thanks": NEGATIVE_KINDS | {Kind.POSITIVE},
}

# Which kinds enter each customer signal's equation (see the module docstring).
SIGNAL_DRIVERS: Mapping[str, frozenset[Kind]] = {
    "churn_risk": NEGATIVE_KINDS | {Kind.POSITIVE},
    "purchase_propensity": NEGATIVE_KINDS | {Kind.POSITIVE},
    "support_need": frozenset({Kind.LUGGAGE, Kind.DISRUPTION, Kind.SERVICE}),
}
SIGNAL_HALF_LIFE_DAYS: Mapping[str, float | None] = {  # None: the config's half-life
    "churn_risk": None,
    "purchase_propensity": None,
    "support_need": 7.0,
}
# The third word of the signal generator's seed (after seed and split): b"signals" as an int.
SIGNAL_STREAM = int.from_bytes(b"signals", "big")

_REASON_KIND = {
    "Lost Luggage": Kind.LUGGAGE,
    "Damaged Luggage": Kind.LUGGAGE,
    "Cancelled Flight": Kind.DISRUPTION,
    "Late Flight": Kind.DISRUPTION,
    "Flight Booking Problems": Kind.DISRUPTION,
    "Customer Service Issue": Kind.SERVICE,
}

_K = Kind
PERSONAS: Mapping[str, tuple[float, Mapping[Kind, float]]] = {
    "bag_trouble": (
        0.18,
        {_K.LUGGAGE: 0.4, _K.SERVICE: 0.1, _K.OTHER_NEGATIVE: 0.1, _K.DISRUPTION: 0.05,
         _K.POSITIVE: 0.05, _K.NEUTRAL: 0.3},
    ),
    "disrupted": (
        0.22,
        {_K.DISRUPTION: 0.45, _K.SERVICE: 0.1, _K.OTHER_NEGATIVE: 0.1, _K.POSITIVE: 0.05,
         _K.NEUTRAL: 0.3},
    ),
    "service_fight": (
        0.18,
        {_K.SERVICE: 0.5, _K.DISRUPTION: 0.1, _K.OTHER_NEGATIVE: 0.1, _K.POSITIVE: 0.05,
         _K.NEUTRAL: 0.25},
    ),
    "happy": (
        0.22,
        {_K.POSITIVE: 0.55, _K.NEUTRAL: 0.35, _K.OTHER_NEGATIVE: 0.05, _K.DISRUPTION: 0.05},
    ),
    "mixed": (0.20, {kind: 1.0 / len(Kind) for kind in Kind}),
}  # fmt: skip

CHANNEL_MIX: Mapping[Channel, float] = {
    Channel.SOCIAL: 0.40,
    Channel.EMAIL: 0.12,
    Channel.CHAT: 0.12,
    Channel.VOICE: 0.10,
    Channel.TICKET: 0.08,
    Channel.SMS: 0.06,
    Channel.WEB: 0.05,
    Channel.MEETING: 0.025,
    Channel.PURCHASE: 0.025,
    Channel.UNSPECIFIED: 0.02,
}
DIRECTION_MIX: Mapping[Direction, float] = {
    Direction.INBOUND: 0.85,
    Direction.OUTBOUND: 0.10,
    Direction.UNSPECIFIED: 0.05,
}
EMPHATIC_CHANNELS = frozenset({Channel.VOICE, Channel.TICKET})

_Mix = tuple[tuple[Kind, ...], NDArray[np.float64]]


def _cdf(weights: Sequence[float]) -> NDArray[np.float64]:
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    normalised: NDArray[np.float64] = cumulative / cumulative[-1]
    return normalised


def _pick(rng: np.random.Generator, cdf: NDArray[np.float64]) -> int:
    """One categorical draw: cheaper than ``Generator.choice(p=...)`` in a loop."""
    return min(int(np.searchsorted(cdf, rng.random(), side="right")), len(cdf) - 1)


_PERSONA_NAMES = tuple(PERSONAS)
_PERSONA_CDF = _cdf([PERSONAS[name][0] for name in _PERSONA_NAMES])
_PERSONA_MIXES: Mapping[str, _Mix] = {
    name: (
        tuple(k for k, p in PERSONAS[name][1].items() if p > 0),
        _cdf([p for p in PERSONAS[name][1].values() if p > 0]),
    )
    for name in _PERSONA_NAMES
}
_CHANNELS = tuple(CHANNEL_MIX)
_CHANNEL_CDF = _cdf([CHANNEL_MIX[c] for c in _CHANNELS])
_DIRECTIONS = tuple(DIRECTION_MIX)
_DIRECTION_CDF = _cdf([DIRECTION_MIX[d] for d in _DIRECTIONS])


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    min_confidence: float = 0.6
    max_tweets_per_kind: int | None = None
    min_history: int = 1
    max_history: int = 12
    max_age_days: float = 365.0
    half_life_days: float = 30.0
    emphatic_channel_multiplier: float = 1.5
    context_empty_probability: float = 0.3
    held_out_buckets: tuple[int, ...] = (0, 1)  # of 10


@dataclass(frozen=True, slots=True)
class Tweet:
    tweet_id: int
    text: str
    kind: Kind
    sentiment: str
    reason: str
    created_at: datetime
    split: Split


@dataclass(frozen=True, slots=True)
class SimInteraction:
    tweet: int  # index into JourneySimulator.tweets
    age_days: float
    channel: Channel
    direction: Direction


@dataclass(frozen=True, slots=True)
class SignalTruth:
    """One customer's customer-signal ground truth (signal id -> value)."""

    logits: Mapping[str, float]
    probabilities: Mapping[str, float]
    outcomes: Mapping[str, bool]
    causes: Mapping[str, tuple[int, ...]]  # signal id -> indices into history

    @classmethod
    def empty(cls) -> SignalTruth:
        return cls({}, {}, {}, {})


@dataclass(frozen=True, slots=True)
class SimCustomer:
    customer_id: str
    split: Split
    persona: str
    history: tuple[SimInteraction, ...]
    context: int | None  # index into JourneySimulator.tweets, None for no current message
    logits: Mapping[str, float]
    probabilities: Mapping[str, float]
    outcomes: Mapping[str, bool]
    best_action: str  # highest probability x value
    causes: Mapping[str, tuple[int, ...]]  # action id -> indices into history
    context_causes: frozenset[str] = field(default_factory=frozenset)
    signals: SignalTruth = field(default_factory=SignalTruth.empty)


def _hash_int(salt: str, tweet_id: int) -> int:
    digest = hashlib.sha256(f"{salt}:{tweet_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def split_of(tweet_id: int, held_out_buckets: Sequence[int] = (0, 1)) -> Split:
    held_out = _hash_int("split", tweet_id) % 10 in held_out_buckets
    return Split.HELD_OUT if held_out else Split.TRAIN


def _kind(sentiment: str, reason: str) -> Kind:
    if sentiment == "positive":
        return Kind.POSITIVE
    if sentiment == "neutral":
        return Kind.NEUTRAL
    return _REASON_KIND.get(reason, Kind.OTHER_NEGATIVE)


def _sat(x: float) -> float:
    return 1.0 - math.exp(-max(x, 0.0))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def structural_logits(loads: Mapping[Kind, float]) -> dict[str, float]:
    """The documented log-odds of success per action given the per-kind loads."""
    lug, dis, ser = loads[Kind.LUGGAGE], loads[Kind.DISRUPTION], loads[Kind.SERVICE]
    oth, pos = loads[Kind.OTHER_NEGATIVE], loads[Kind.POSITIVE]
    return {
        "apology_credit": -1.6 + 1.4 * _sat(lug) + 0.9 * _sat(dis) + 0.7 * _sat(ser)
        + 0.4 * _sat(oth),
        "rebooking_assist": -2.4 + 3.4 * _sat(dis),
        "escalate_to_agent": -2.4 + 3.8 * _sat(ser - 0.8),
        "baggage_trace": -2.6 + 3.8 * _sat(lug),
        "seat_upgrade_offer": -1.8 + 2.8 * _sat(pos) - 2.2 * _sat(lug)
        - 1.2 * _sat(dis + ser + oth),
        "loyalty_thanks": -0.8 + 2.4 * _sat(pos) - 1.0 * _sat(lug + dis + ser + oth),
    }  # fmt: skip


def structural_signal_logits(
    loads: Mapping[Kind, float], recent: Mapping[Kind, float]
) -> dict[str, float]:
    """The documented log-odds of each customer signal given the history's per-kind loads.

    ``loads`` use the config's half-life, ``recent`` the 7-day one (``SIGNAL_HALF_LIFE_DAYS``).
    """
    lug, dis, ser = loads[Kind.LUGGAGE], loads[Kind.DISRUPTION], loads[Kind.SERVICE]
    oth, pos = loads[Kind.OTHER_NEGATIVE], loads[Kind.POSITIVE]
    return {
        "churn_risk": -2.6 + 1.6 * _sat(lug) + 1.3 * _sat(dis) + 2.6 * _sat(ser)
        + 0.8 * _sat(oth) - 2.0 * _sat(pos),
        "purchase_propensity": -1.9 + 3.0 * _sat(pos) - 1.4 * _sat(lug + dis + ser + oth),
        "support_need": -3.0 + 3.6 * _sat(recent[Kind.LUGGAGE])
        + 3.1 * _sat(recent[Kind.DISRUPTION]) + 2.6 * _sat(recent[Kind.SERVICE]),
    }  # fmt: skip


class JourneySimulator:
    """Builds seeded synthetic customers from real tweets; see the module docstring."""

    def __init__(
        self,
        tweets_path: Path | str | None = None,
        *,
        config: SimulatorConfig | None = None,
        catalog: Sequence[Action] = BUILTIN_CATALOG,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.tweets_path = Path(tweets_path) if tweets_path is not None else default_tweets_path()
        unknown = [a.action_id for a in catalog if a.action_id not in DRIVERS]
        if unknown:
            raise ValueError(f"the simulator has no causal equation for actions {unknown}")
        self.catalog = tuple(catalog)
        self.tweets = self._load()
        pools: dict[tuple[Split, Kind], list[int]] = {(s, k): [] for s in Split for k in Kind}
        for index, tweet in enumerate(self.tweets):
            pools[tweet.split, tweet.kind].append(index)
        self._pools = {key: np.asarray(value, dtype=np.int64) for key, value in pools.items()}

    def _load(self) -> tuple[Tweet, ...]:
        cfg = self.config
        frame = pd.read_csv(self.tweets_path, dtype={"tweet_id": "int64"})
        frame = frame.drop_duplicates("tweet_id", keep="first")
        negative = frame["airline_sentiment"] == "negative"
        confident = (frame["airline_sentiment_confidence"] >= cfg.min_confidence) & (
            ~negative | (frame["negativereason_confidence"] >= cfg.min_confidence)
        )
        frame = frame[confident]
        rows: list[tuple[int, Tweet]] = []
        for tweet_id, sentiment, reason, text, created in zip(
            frame["tweet_id"].tolist(),
            frame["airline_sentiment"].tolist(),
            frame["negativereason"].fillna("").tolist(),
            frame["text"].tolist(),
            frame["tweet_created"].tolist(),
            strict=True,
        ):
            tid = int(tweet_id)
            tweet = Tweet(
                tweet_id=tid,
                text=str(text),
                kind=_kind(str(sentiment), str(reason)),
                sentiment=str(sentiment),
                reason=str(reason),
                created_at=datetime.strptime(str(created), "%Y-%m-%d %H:%M:%S %z"),
                split=split_of(tid, cfg.held_out_buckets),
            )
            rows.append((_hash_int("order", tid), tweet))
        rows.sort(key=lambda row: (row[0], row[1].tweet_id))
        if cfg.max_tweets_per_kind is not None:
            kept: dict[Kind, int] = dict.fromkeys(Kind, 0)
            capped = []
            for order, tweet in rows:
                if kept[tweet.kind] < cfg.max_tweets_per_kind:
                    kept[tweet.kind] += 1
                    capped.append((order, tweet))
            rows = capped
        return tuple(tweet for _, tweet in rows)

    def pool(self, split: Split, kind: Kind) -> tuple[int, ...]:
        return tuple(int(i) for i in self._pools[split, kind])

    def weight(self, interaction: SimInteraction, half_life_days: float | None = None) -> float:
        """The causal weight of one interaction (0 when it causes nothing); ``half_life_days``
        overrides the config's half-life (the 7-day signal loads)."""
        cfg = self.config
        if interaction.direction is Direction.OUTBOUND:
            return 0.0
        if self.tweets[interaction.tweet].kind is Kind.NEUTRAL:
            return 0.0
        half_life = cfg.half_life_days if half_life_days is None else half_life_days
        recency = float(0.5 ** (max(interaction.age_days, 0.0) / half_life))
        if interaction.channel in EMPHATIC_CHANNELS:
            return recency * cfg.emphatic_channel_multiplier
        return recency

    def loads(
        self,
        history: Sequence[SimInteraction],
        context: int | None,
        half_life_days: float | None = None,
    ) -> dict[Kind, float]:
        totals = dict.fromkeys(Kind, 0.0)
        for interaction in history:
            totals[self.tweets[interaction.tweet].kind] += self.weight(interaction, half_life_days)
        if context is not None and self.tweets[context].kind is not Kind.NEUTRAL:
            totals[self.tweets[context].kind] += 1.0
        return totals

    def signal_logits(self, history: Sequence[SimInteraction]) -> dict[str, float]:
        """The structural log-odds of every customer signal for a history (context unused)."""
        recent = self.loads(history, None, SIGNAL_HALF_LIFE_DAYS["support_need"])
        return structural_signal_logits(self.loads(history, None), recent)

    def _signal_truth(
        self, history: Sequence[SimInteraction], rng: np.random.Generator
    ) -> SignalTruth:
        logits = self.signal_logits(history)
        probabilities = {name: _sigmoid(logit) for name, logit in logits.items()}
        draws = rng.random(len(SIGNAL_DRIVERS))
        causes = {
            name: tuple(
                i
                for i, inter in enumerate(history)
                if self.weight(inter, SIGNAL_HALF_LIFE_DAYS[name]) > 0
                and self.tweets[inter.tweet].kind in drivers
            )
            for name, drivers in SIGNAL_DRIVERS.items()
        }
        return SignalTruth(
            logits=logits,
            probabilities=probabilities,
            outcomes={
                name: bool(draws[i] < probabilities[name]) for i, name in enumerate(SIGNAL_DRIVERS)
            },
            causes=causes,
        )

    def customers(self, n: int, split: Split, seed: int) -> list[SimCustomer]:
        """``n`` customers of one split; the same (n, split, seed) always gives the same list.

        Signal outcomes come from a second generator, so the rest is unchanged by them.
        """
        split_code = 0 if split is Split.TRAIN else 1
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_code]))
        signal_rng = np.random.default_rng(
            np.random.SeedSequence([seed, split_code, SIGNAL_STREAM])
        )
        return [
            self._customer(f"sim-{split.value}-{seed}-{number:06d}", split, rng, signal_rng)
            for number in range(n)
        ]

    def _draw_tweet(self, rng: np.random.Generator, split: Split, mix: _Mix) -> int:
        kinds, cumulative = mix
        kind = kinds[_pick(rng, cumulative)]
        pool = self._pools[split, kind]
        return int(pool[int(rng.integers(len(pool)))])

    def _customer(
        self,
        customer_id: str,
        split: Split,
        rng: np.random.Generator,
        signal_rng: np.random.Generator,
    ) -> SimCustomer:
        cfg = self.config
        persona = _PERSONA_NAMES[_pick(rng, _PERSONA_CDF)]
        mix = _PERSONA_MIXES[persona]
        length = int(rng.integers(cfg.min_history, cfg.max_history + 1))
        ages = np.sort(cfg.max_age_days * rng.random(length) ** 2)[::-1]  # oldest first
        history = tuple(
            SimInteraction(
                tweet=self._draw_tweet(rng, split, mix),
                age_days=float(age),
                channel=_CHANNELS[_pick(rng, _CHANNEL_CDF)],
                direction=_DIRECTIONS[_pick(rng, _DIRECTION_CDF)],
            )
            for age in ages
        )
        context: int | None = None
        if rng.random() >= cfg.context_empty_probability:
            context = self._draw_tweet(rng, split, mix)
        logits = structural_logits(self.loads(history, context))
        probabilities = {a.action_id: _sigmoid(logits[a.action_id]) for a in self.catalog}
        draws = rng.random(len(self.catalog))
        outcomes = {
            a.action_id: bool(draws[i] < probabilities[a.action_id])
            for i, a in enumerate(self.catalog)
        }
        best = max(self.catalog, key=lambda a: probabilities[a.action_id] * a.value)
        causes = {
            a.action_id: tuple(
                i
                for i, inter in enumerate(history)
                if self.weight(inter) > 0 and self.tweets[inter.tweet].kind in DRIVERS[a.action_id]
            )
            for a in self.catalog
        }
        context_causes = frozenset(
            a.action_id
            for a in self.catalog
            if context is not None and self.tweets[context].kind in DRIVERS[a.action_id]
        )
        return SimCustomer(
            customer_id=customer_id,
            split=split,
            persona=persona,
            history=history,
            context=context,
            logits={a.action_id: logits[a.action_id] for a in self.catalog},
            probabilities=probabilities,
            outcomes=outcomes,
            best_action=best.action_id,
            causes=causes,
            context_causes=context_causes,
            signals=self._signal_truth(history, signal_rng),
        )

    def describe(self) -> dict[str, object]:
        """What the manifest records about the data behind a training run."""
        digest = hashlib.sha256(self.tweets_path.read_bytes()).hexdigest()
        counts = {
            f"{split.value}/{kind.value}": len(self._pools[split, kind])
            for split in Split
            for kind in Kind
        }
        return {
            "data_set": DATA_SET,
            "file": self.tweets_path.name,
            "file_sha256": digest,
            "tweets_used": len(self.tweets),
            "tweets_per_split_and_kind": counts,
            "config": {
                "min_confidence": self.config.min_confidence,
                "max_tweets_per_kind": self.config.max_tweets_per_kind,
                "history_length": [self.config.min_history, self.config.max_history],
                "max_age_days": self.config.max_age_days,
                "half_life_days": self.config.half_life_days,
                "emphatic_channel_multiplier": self.config.emphatic_channel_multiplier,
                "context_empty_probability": self.config.context_empty_probability,
                "held_out_buckets_of_10": list(self.config.held_out_buckets),
            },
        }
