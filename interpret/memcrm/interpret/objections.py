"""Sales and service objections, recognised from label descriptions and a few examples.

No labelled corpus of objections exists, so nothing here is trained in the usual sense: each
label is described by one sentence and a handful of example utterances (an ``ObjectionSpec``), a
tenant may rewrite, add or drop them, and the classifier compares a text's embedding with the
embeddings of those descriptions and examples. The ingestion pipeline already has every text's
embedding from its single encoder pass, so ``ObjectionClassifier.classify`` takes embeddings and
never encodes the texts again; the encoder is used only once, at construction, for the specs.

Decision rule, and why
----------------------
For a text with embedding ``x`` (L2-normalised, so a dot product is a cosine):

* ``s_l = cos(x, c_l)`` where ``c_l`` is the normalised mean of label ``l``'s prototypes (its
  description and its examples). A centroid, not the nearest example: a single example carries
  its own topic ("$40 a month", "Salesforce", "my mum"), so a nearest-example rule matches
  texts on what they talk about rather than on why they hesitate; averaging the description
  with a handful of varied examples cancels the topics and keeps the shared reason. On the
  development half, each variant with its own grid-tuned calibration, the centroid scored 0.73
  macro-F1 against 0.58 for the nearest example and 0.61 for the mean of the two nearest (the
  test half was not looked at while choosing). The description counts as one prototype among
  the examples: leaving it out cost 0.07 on development.
* ``s_none = cos(x, c_none)``, the centroid of ``NEUTRAL_UTTERANCES``: thanks, logistics,
  product questions and complaints that are not objections. Every customer utterance resembles
  *some* objection a little (they all talk about plans, money, teams and time), so an absolute
  threshold on ``s_l`` either misses indirect objections or flags every billing question;
  comparing with how much the text resembles ordinary customer talk separates the two.
* Confidences: ``softmax([s_1, ..., s_K, s_none + none_bias] / temperature)``. The cosine gaps
  are a few hundredths; the temperature maps them onto probabilities, and ``none_bias`` is the
  margin an objection must win by over ordinary talk.
* Output: every label whose probability reaches ``threshold``, most confident first (two
  objections can be raised at once: "too expensive, and my CFO would have to sign anyway");
  nothing when none reaches it. Each ``Label``'s confidence is its softmax probability, in 0..1.

One global ``Calibration`` (temperature, bias, threshold), not one per label: the development
half holds about thirteen examples per label, too few to set seven thresholds without fitting
noise, and a tenant's new label has no labelled data at all yet must work with global values.

How the calibration was chosen
------------------------------
``evaluate`` splits ``tests/data/objections.jsonl`` deterministically into a development half
and a test half (per gold label, examples ordered by the sha256 of their id, alternately).
``calibrate`` sees the development half only, in two steps: temperature and bias minimise the
negative log-likelihood of the gold labels (so a confidence of 0.6 means about 60 %), then the
threshold maximises single-label macro-F1 (then accuracy, then the higher threshold). Fitting
just one decision parameter to F1, on a grid, keeps ~100 development examples from being
overfitted. ``DEFAULT_CALIBRATION`` is exactly what that search returns (a unit test checks
it); the test half is only ever scored.

Everything is deterministic: fixed prototype order, no sampling, ties broken by label order.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from memcrm.core.types import Label

Embed = Callable[[Sequence[str]], NDArray[np.float32]]

NONE_LABEL = "none"


@dataclass(frozen=True)
class ObjectionSpec:
    """One objection a tenant wants recognised: a name, one sentence, a few example utterances."""

    label: str
    description: str
    examples: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.label.strip():
            raise ValueError("an objection needs a label")
        if self.label == NONE_LABEL:
            raise ValueError(f"{NONE_LABEL!r} is reserved for 'no objection'")
        if not self.description.strip() and not any(e.strip() for e in self.examples):
            raise ValueError(f"objection {self.label!r} needs a description or examples")


DEFAULT_OBJECTIONS: tuple[ObjectionSpec, ...] = (
    ObjectionSpec(
        "price",
        "The customer objects that the cost is too high, above their budget or not worth the "
        "money.",
        (
            "Honestly it's just too expensive for us.",
            "That's way over what we budgeted for this.",
            "Can you do anything on the price? $40 a month is a lot.",
            "We love it but we can't justify paying that much per seat.",
            "Your quote came in about 30% higher than we expected.",
        ),
    ),
    ObjectionSpec(
        "timing",
        "The customer is open to it but says now is not the right time and wants to wait, "
        "postpone or talk again later.",
        (
            "Not right now, ping me again in Q3.",
            "We're swamped with a product launch this month, maybe later.",
            "I just moved house, can we talk about this in a couple of months?",
            "It's a good idea, just not this year.",
        ),
    ),
    ObjectionSpec(
        "competitor",
        "The customer already uses, prefers or is comparing another vendor's product or service.",
        (
            "We already have a contract with Salesforce.",
            "Another provider offered me the same plan for less.",
            "We're also evaluating HubSpot and Zoho before we decide.",
            "Our current supplier does this for us already.",
        ),
    ),
    ObjectionSpec(
        "authority",
        "The customer cannot decide alone and needs approval from a manager, partner, "
        "procurement, a board or another decision maker.",
        (
            "I'll have to run this by my boss first.",
            "Procurement has to approve any new vendor.",
            "That decision sits with our IT director, not me.",
            "The account is in my mum's name, so she'd have to okay it.",
        ),
    ),
    ObjectionSpec(
        "need",
        "The customer sees no need for the product or says it does not solve a problem they have.",
        (
            "We don't really need this.",
            "Our team is only three people, a spreadsheet works fine.",
            "I only watch the news, so the sports package is wasted on me.",
            "Nothing is broken with how we do things today.",
        ),
    ),
    ObjectionSpec(
        "trust",
        "The customer doubts the company, its claims, its security or its reliability and is "
        "not convinced it can be trusted.",
        (
            "How do I know this isn't a scam?",
            "We're worried about where our data would be stored.",
            "What guarantees do we have that you'll still be around in three years?",
            "The demo looked polished, but I'm not convinced it works like that in real life.",
            "I've read a lot of bad reviews about your support.",
        ),
    ),
)

# Ordinary customer talk that raises no objection: the reference an objection must beat.
NEUTRAL_UTTERANCES: tuple[str, ...] = (
    "Thanks for your help!",
    "What time does your store open on Saturday?",
    "Can you resend the invoice to my work email?",
    "My package hasn't arrived yet, can you check the tracking?",
    "Sounds good, let's go ahead with the annual plan.",
    "I'd like to update my billing address.",
    "How do I reset my password?",
    "Great call today, see you Thursday.",
    "Please send me the onboarding documents.",
    "The app keeps crashing when I open settings.",
    "Can we move our meeting to 3pm?",
    "Yes, please sign me up.",
    "Where can I find the user guide?",
    "I received the wrong size, I'd like an exchange.",
    "Hi, just checking in on the status of my ticket.",
    "Who is my account manager?",
    "Perfect, that answers my question.",
    "Is there parking at your office?",
    "Please add two more users to our account.",
    "Do you offer an API for exporting contacts?",
)


@dataclass(frozen=True)
class Calibration:
    """Turns similarities into confidences and decisions; see the module docstring."""

    temperature: float
    none_bias: float
    threshold: float

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")


# Chosen by ``calibrate`` on the development half of tests/data/objections.jsonl (see evaluate).
DEFAULT_CALIBRATION = Calibration(temperature=0.045, none_bias=-0.015, threshold=0.35)


def _normalise(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


class ObjectionClassifier:
    """Finds the objections raised in texts, given the texts' embeddings.

    Built once per tenant configuration: the specs' descriptions and examples and the neutral
    references are embedded here, once; ``classify`` is then a few matrix products.
    """

    def __init__(
        self,
        specs: Sequence[ObjectionSpec],
        embed: Embed,
        *,
        neutral: Sequence[str] = NEUTRAL_UTTERANCES,
        calibration: Calibration = DEFAULT_CALIBRATION,
    ) -> None:
        if not specs:
            raise ValueError("an objection classifier needs at least one spec")
        labels = [spec.label for spec in specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate objection labels in {labels}")
        if not neutral:
            raise ValueError("the 'no objection' reference needs at least one utterance")
        groups: list[list[str]] = [
            [text for text in (spec.description, *spec.examples) if text.strip()] for spec in specs
        ]
        groups.append(list(neutral))
        texts = [text for group in groups for text in group]
        vectors = _normalise(embed(texts))
        if vectors.shape[0] != len(texts):
            raise ValueError(f"embed returned {vectors.shape[0]} vectors for {len(texts)} texts")
        centroids = []
        start = 0
        for group in groups:
            centroids.append(vectors[start : start + len(group)].mean(axis=0))
            start += len(group)
        self._labels: tuple[str, ...] = tuple(labels)
        # (K + 1, dim): one unit vector per label, then the 'no objection' reference.
        self._centroids = _normalise(np.stack(centroids).astype(np.float32))
        self.calibration = calibration

    @property
    def labels(self) -> tuple[str, ...]:
        """The objection labels, in spec order (``none`` is not one of them)."""
        return self._labels

    def with_calibration(self, calibration: Calibration) -> ObjectionClassifier:
        """The same prototypes under another calibration, without embedding anything again."""
        clone = object.__new__(ObjectionClassifier)
        clone._labels = self._labels
        clone._centroids = self._centroids
        clone.calibration = calibration
        return clone

    def similarities(self, embeddings: NDArray[np.float32]) -> NDArray[np.float32]:
        """(n, K + 1): cosine to each label's centroid, then to the neutral centroid."""
        x = _normalise(embeddings)
        if x.shape[1] != self._centroids.shape[1]:
            raise ValueError(
                f"embeddings have {x.shape[1]} dimensions, prototypes {self._centroids.shape[1]}"
            )
        # einsum, not BLAS: each cosine is summed in the same order whatever the batch, so a
        # text gets bit-identical confidences alone or in any batch (BLAS blocks by batch size).
        cosines = np.einsum("nd,kd->nk", x.astype(np.float64), self._centroids.astype(np.float64))
        return np.asarray(cosines, dtype=np.float32)

    def probabilities(self, embeddings: NDArray[np.float32]) -> NDArray[np.float64]:
        """(n, K + 1) calibrated probabilities; the last column is 'no objection'."""
        return _softmax(self.similarities(embeddings), self.calibration)

    def classify(self, embeddings: NDArray[np.float32]) -> list[tuple[Label, ...]]:
        """For each embedded text, the objections it raises, most confident first."""
        probs = self.probabilities(embeddings)
        threshold = self.calibration.threshold
        result: list[tuple[Label, ...]] = []
        for row in probs:
            raised = [(float(row[i]), i) for i in range(len(self._labels)) if row[i] >= threshold]
            raised.sort(key=lambda item: (-item[0], item[1]))
            result.append(tuple(Label(self._labels[i], p) for p, i in raised))
        return result


def _softmax(similarities: NDArray[np.float32], calibration: Calibration) -> NDArray[np.float64]:
    logits = similarities.astype(np.float64)
    logits[:, -1] += calibration.none_bias
    logits /= calibration.temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return np.asarray(weights / weights.sum(axis=1, keepdims=True), dtype=np.float64)


def _decide(probs: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    """Single-label decision: the most probable label if it reaches the threshold, else none."""
    objections = probs[:, :-1]
    top = objections.argmax(axis=1)
    best = objections[np.arange(len(top)), top]
    none = probs.shape[1] - 1
    return np.asarray(np.where(best >= threshold, top, none), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Scoring


def accuracy_and_macro_f1(gold: Sequence[str], predicted: Sequence[str]) -> tuple[float, float]:
    """Single-label accuracy and macro-F1 over the classes present in gold or predictions.

    ``none`` is a class like the others, so flagging an objection in a thank-you costs F1 on
    both ``none`` and the label wrongly raised.
    """
    if len(gold) != len(predicted) or not gold:
        raise ValueError("gold and predicted must be non-empty and of equal length")
    correct = sum(g == p for g, p in zip(gold, predicted, strict=True))
    f1s: list[float] = []
    for cls in sorted(set(gold) | set(predicted)):
        tp = sum(g == cls and p == cls for g, p in zip(gold, predicted, strict=True))
        fp = sum(g != cls and p == cls for g, p in zip(gold, predicted, strict=True))
        fn = sum(g == cls and p != cls for g, p in zip(gold, predicted, strict=True))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return correct / len(gold), sum(f1s) / len(f1s)


def _macro_f1_indices(gold: NDArray[np.int64], predicted: NDArray[np.int64], k: int) -> float:
    f1s = []
    for cls in range(k):
        if not (gold == cls).any() and not (predicted == cls).any():
            continue
        tp = int(((gold == cls) & (predicted == cls)).sum())
        fp = int(((gold != cls) & (predicted == cls)).sum())
        fn = int(((gold == cls) & (predicted != cls)).sum())
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s)


# Grids built from integers so that they are the same on every platform.
TEMPERATURE_GRID: tuple[float, ...] = tuple(round(0.0025 * i, 4) for i in range(2, 41))
BIAS_GRID: tuple[float, ...] = tuple(round(0.005 * i, 4) for i in range(-20, 21))
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(3, 13))


def calibrate(similarities: NDArray[np.float32], gold: NDArray[np.int64]) -> Calibration:
    """Choose the calibration on labelled development data (never on data that is reported).

    ``similarities`` is ``ObjectionClassifier.similarities`` of the development texts and
    ``gold`` their label indices (``K`` for none). Temperature and bias: the grid point with
    the lowest negative log-likelihood (ties: the earlier grid point). Threshold: the best
    macro-F1 of the single-label decision, then accuracy, then the higher threshold, the more
    conservative of equals.
    """
    if similarities.shape[0] != len(gold) or len(gold) == 0:
        raise ValueError("calibration needs one gold label per row of similarities")
    rows = np.arange(len(gold))
    best_nll = math.inf
    temperature, bias = TEMPERATURE_GRID[0], BIAS_GRID[0]
    for t in TEMPERATURE_GRID:
        for b in BIAS_GRID:
            probs = _softmax(similarities, Calibration(t, b, 1.0))
            nll = float(-np.log(np.maximum(probs[rows, gold], 1e-300)).mean())
            if nll < best_nll - 1e-12:
                best_nll, temperature, bias = nll, t, b
    probs = _softmax(similarities, Calibration(temperature, bias, 1.0))
    k = similarities.shape[1]
    best_key: tuple[float, float, float] | None = None
    threshold = THRESHOLD_GRID[0]
    for th in THRESHOLD_GRID:
        predicted = _decide(probs, th)
        key = (
            round(_macro_f1_indices(gold, predicted, k), 9),
            round(float((predicted == gold).mean()), 9),
            th,
        )
        if best_key is None or key > best_key:
            best_key, threshold = key, th
    return Calibration(temperature, bias, threshold)


# ---------------------------------------------------------------------------------------------
# The labelled set and the evaluation


@dataclass(frozen=True)
class LabelledExample:
    id: str
    text: str
    label: str


DEFAULT_DATA_PATH = Path(__file__).resolve().parents[3] / "tests" / "data" / "objections.jsonl"


def load_labelled(path: Path | None = None) -> list[LabelledExample]:
    """The hand-written labelled set: one JSON object per line with id, text and label."""
    source = path or DEFAULT_DATA_PATH
    examples = []
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                examples.append(LabelledExample(str(row["id"]), str(row["text"]), row["label"]))
            except KeyError as missing:
                raise ValueError(f"{source}:{number}: missing field {missing}") from None
    ids = [example.id for example in examples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: example ids are not unique")
    return examples


def _id_hash(example_id: str) -> str:
    return hashlib.sha256(example_id.encode("utf-8")).hexdigest()


def split_dev_test(
    examples: Iterable[LabelledExample],
) -> tuple[list[LabelledExample], list[LabelledExample]]:
    """Deterministic, stratified halves: per label, ordered by sha256(id), alternately dev/test.

    Hashing the id (not the file order or the text) keeps an example on its side when others
    are added, edited or reordered; stratifying keeps every label on both sides.
    """
    by_label: dict[str, list[LabelledExample]] = {}
    for example in examples:
        by_label.setdefault(example.label, []).append(example)
    dev: list[LabelledExample] = []
    test: list[LabelledExample] = []
    for label in sorted(by_label):
        ordered = sorted(by_label[label], key=lambda e: _id_hash(e.id))
        dev.extend(ordered[0::2])
        test.extend(ordered[1::2])
    return dev, test


def _baseline_predictions(
    train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str]
) -> list[str]:
    """TF-IDF (word 1-2 grams) + logistic regression; C by 5-fold CV on the training data only."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    pipeline = Pipeline(
        [
            ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ("logreg", LogisticRegression(max_iter=5000)),
        ]
    )
    search = GridSearchCV(
        pipeline,
        {"logreg__C": [0.3, 1.0, 3.0, 10.0, 30.0, 100.0]},
        scoring="f1_macro",
        cv=StratifiedKFold(n_splits=5, shuffle=True, random_state=0),
    )
    # A few hundred short texts: BLAS threads only contend (badly, on a shared 2-core host).
    with threadpool_limits(limits=1):
        search.fit(list(train_texts), list(train_labels))
        return [str(label) for label in search.predict(list(test_texts))]


def evaluate(
    embed: Embed,
    path: Path | None = None,
    *,
    specs: Sequence[ObjectionSpec] = DEFAULT_OBJECTIONS,
) -> dict[str, Any]:
    """Accuracy and macro-F1 on the test half, beside a TF-IDF + logistic-regression baseline.

    Single-label scoring: a text's prediction is its most confident raised objection, or
    ``none`` when nothing is raised; it is compared with the gold label, ``none`` being one of
    the classes. The classifier's calibration is chosen on the development half in this run
    (``calibrate``); the baseline is trained on the development half plus the specs' examples
    and the neutral references (the same few-shot material the classifier has) and scored on
    the same test half.
    """
    examples = load_labelled(path)
    known = {spec.label for spec in specs} | {NONE_LABEL}
    unknown = sorted({e.label for e in examples} - known)
    if unknown:
        raise ValueError(f"labelled set has labels the specs lack: {unknown}")
    dev, test = split_dev_test(examples)
    classifier = ObjectionClassifier(specs, embed)
    names = [*classifier.labels, NONE_LABEL]
    index = {name: i for i, name in enumerate(names)}

    dev_sims = classifier.similarities(embed([e.text for e in dev]))
    calibration = calibrate(dev_sims, np.asarray([index[e.label] for e in dev], dtype=np.int64))
    tuned = classifier.with_calibration(calibration)

    test_gold = [e.label for e in test]
    raised = tuned.classify(embed([e.text for e in test]))
    predicted = [labels[0].name if labels else NONE_LABEL for labels in raised]
    accuracy, macro_f1 = accuracy_and_macro_f1(test_gold, predicted)

    train_texts = [e.text for e in dev]
    train_labels = [e.label for e in dev]
    for spec in specs:
        train_texts.extend(spec.examples)
        train_labels.extend([spec.label] * len(spec.examples))
    train_texts.extend(NEUTRAL_UTTERANCES)
    train_labels.extend([NONE_LABEL] * len(NEUTRAL_UTTERANCES))
    baseline = _baseline_predictions(train_texts, train_labels, [e.text for e in test])
    base_accuracy, base_macro_f1 = accuracy_and_macro_f1(test_gold, baseline)

    return {
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "baseline": {"accuracy": base_accuracy, "macro_f1": base_macro_f1},
        "n_test": len(test),
        "n_dev": len(dev),
        "labels": names,
        "calibration": {
            "temperature": calibration.temperature,
            "none_bias": calibration.none_bias,
            "threshold": calibration.threshold,
        },
    }


__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_OBJECTIONS",
    "NEUTRAL_UTTERANCES",
    "NONE_LABEL",
    "Calibration",
    "Embed",
    "LabelledExample",
    "ObjectionClassifier",
    "ObjectionSpec",
    "accuracy_and_macro_f1",
    "calibrate",
    "evaluate",
    "load_labelled",
    "split_dev_test",
]
