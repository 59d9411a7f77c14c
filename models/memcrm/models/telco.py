"""The IBM Telco customer-churn data set: loading, the fixed split and the profile encoding.

``telco-churn/Telco-Customer-Churn.csv`` under the data dir (``Settings().data_dir``, env
``MEMCRM_DATA_DIR``, default ``../shared/data``; Apache 2.0, IBM sample data) has one row per
customer: ``customerID``, demographics, services, contract, charges and ``Churn`` (Yes/No).
Nothing from it is copied into the project; every run reads the CSV.

Features (profile features only; nothing about interactions):

- numeric: ``tenure`` (months), ``MonthlyCharges``, ``TotalCharges``. ``TotalCharges`` is blank
  for the customers with ``tenure == 0`` (11 rows: nothing billed yet); a blank is read as
  ``tenure * MonthlyCharges``, i.e. 0 for them. A blank with a non-zero tenure, or any other
  value that is not a number, is an error rather than a guess.
- categorical: every other column except ``customerID`` and ``Churn`` (``SeniorCitizen`` is a
  0/1 category). :class:`ProfileEncoding` maps each column's values, as seen in the rows it was
  fitted on, to codes ``1..k`` sorted by value; code 0 is a value it has not seen.
- label: ``Churn == "Yes"`` (1) or ``"No"`` (0).

Split rules (fixed functions of ``customerID``, so every run and every model agrees without a
stored list): with ``bucket(key) = int.from_bytes(sha256(key)[:8], "big") mod 10``,

- test (20 %): ``bucket("telco-split:<customerID>")`` in {0, 1}; only ever scored;
- train (80 %): the rest;
- validation (model selection, about 20 % of train): train rows with
  ``bucket("telco-val:<customerID>")`` in {0, 1}.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from memcrm.models.enrichment_data import default_data_dir
from memcrm.models.nba_net import ProfileSpec

DATA_SET = "IBM Telco Customer Churn (IBM sample data), Apache 2.0"
RELATIVE_PATH = Path("telco-churn") / "Telco-Customer-Churn.csv"
ID_COLUMN = "customerID"
LABEL_COLUMN = "Churn"
NUMERIC: tuple[str, ...] = ("tenure", "MonthlyCharges", "TotalCharges")
CATEGORICAL: tuple[str, ...] = (
    "gender",
    "SeniorCitizen",
    "Partner",
    "Dependents",
    "PhoneService",
    "MultipleLines",
    "InternetService",
    "OnlineSecurity",
    "OnlineBackup",
    "DeviceProtection",
    "TechSupport",
    "StreamingTV",
    "StreamingMovies",
    "Contract",
    "PaperlessBilling",
    "PaymentMethod",
)
TEST_BUCKETS: tuple[int, ...] = (0, 1)  # of 10
VALIDATION_BUCKETS: tuple[int, ...] = (0, 1)  # of 10, among train rows
SPLIT_RULE = {
    "bucket": "int.from_bytes(sha256(key.encode())[:8], 'big') % 10",
    "test": "bucket('telco-split:<customerID>') in {0, 1} (20 %), only scored",
    "train": "every other row (80 %); the final models are fitted on all of it",
    "validation": "train rows with bucket('telco-val:<customerID>') in {0, 1}; used only to "
    "choose our network's training settings (fitted on the rest of train)",
}


def default_telco_path(data_dir: Path | None = None) -> Path:
    """The CSV under ``data_dir`` or the configured data dir (relative to the checkout)."""
    return (data_dir if data_dir is not None else default_data_dir()) / RELATIVE_PATH


def bucket(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 10


def is_test(customer_id: str) -> bool:
    return bucket(f"telco-split:{customer_id}") in TEST_BUCKETS


def is_validation(customer_id: str) -> bool:
    """Meaningful for train rows only (test rows are never used for model selection)."""
    return bucket(f"telco-val:{customer_id}") in VALIDATION_BUCKETS


@dataclass(frozen=True, slots=True)
class TelcoData:
    """The whole file, cleaned: one row per customer in file order."""

    path: Path
    sha256: str
    customer_ids: tuple[str, ...]
    frame: pd.DataFrame  # NUMERIC as float64, CATEGORICAL as str
    churn: NDArray[np.int64]  # (N,) 1 = churned

    def __len__(self) -> int:
        return len(self.customer_ids)

    def features(self, rows: NDArray[np.int64]) -> pd.DataFrame:
        """The NUMERIC + CATEGORICAL columns of ``rows`` (what the baselines see)."""
        selected: pd.DataFrame = self.frame.iloc[rows][[*NUMERIC, *CATEGORICAL]]
        return selected.reset_index(drop=True)


@dataclass(frozen=True, slots=True)
class TelcoSplit:
    """Row indices into ``TelcoData`` (sorted, disjoint; validation is a subset of train)."""

    train: NDArray[np.int64]
    validation: NDArray[np.int64]
    fit: NDArray[np.int64]  # train minus validation: what model selection trains on
    test: NDArray[np.int64]


def load_telco(path: Path | None = None) -> TelcoData:
    """Read and clean the CSV (see the module docstring); raises ``ValueError`` on bad rows."""
    path = path if path is not None else default_telco_path()
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {ID_COLUMN, LABEL_COLUMN, *NUMERIC, *CATEGORICAL} - set(raw.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    ids = raw[ID_COLUMN].str.strip()
    if ids.eq("").any() or not ids.is_unique:
        raise ValueError(f"{path}: {ID_COLUMN} must be non-empty and unique")
    labels = raw[LABEL_COLUMN].str.strip()
    if not labels.isin(["Yes", "No"]).all():
        raise ValueError(f"{path}: {LABEL_COLUMN} must be Yes or No")
    frame = pd.DataFrame(index=raw.index)
    for column in ("tenure", "MonthlyCharges"):
        frame[column] = pd.to_numeric(raw[column].str.strip(), errors="raise").astype(np.float64)
    total = raw["TotalCharges"].str.strip()
    blank = total.eq("")
    if (frame.loc[blank, "tenure"] != 0).any():
        raise ValueError(f"{path}: TotalCharges is blank for a customer with a non-zero tenure")
    nothing_billed = frame["tenure"] * frame["MonthlyCharges"]
    billed = pd.to_numeric(total[~blank], errors="raise").astype(np.float64)
    frame["TotalCharges"] = nothing_billed
    frame.loc[~blank, "TotalCharges"] = billed
    for column in CATEGORICAL:
        frame[column] = raw[column].str.strip()
    return TelcoData(
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        customer_ids=tuple(ids.tolist()),
        frame=frame,
        churn=labels.eq("Yes").to_numpy(dtype=np.int64),
    )


def split(data: TelcoData) -> TelcoSplit:
    """The fixed split of the module docstring."""
    test = np.asarray([is_test(c) for c in data.customer_ids], dtype=bool)
    validation = ~test & np.asarray([is_validation(c) for c in data.customer_ids], dtype=bool)
    return TelcoSplit(
        train=np.flatnonzero(~test).astype(np.int64),
        validation=np.flatnonzero(validation).astype(np.int64),
        fit=np.flatnonzero(~test & ~validation).astype(np.int64),
        test=np.flatnonzero(test).astype(np.int64),
    )


@dataclass(frozen=True, slots=True)
class ProfileEncoding:
    """Categorical vocabularies and numeric statistics fitted on training rows only."""

    vocabularies: tuple[tuple[str, ...], ...]  # per CATEGORICAL column, sorted; code = 1 + index
    numeric_mean: NDArray[np.float64]  # (len(NUMERIC),)
    numeric_scale: NDArray[np.float64]  # (len(NUMERIC),) population std, 1 where constant

    @classmethod
    def fit(cls, data: TelcoData, rows: NDArray[np.int64]) -> ProfileEncoding:
        if len(rows) == 0:
            raise ValueError("cannot fit an encoding on no rows")
        frame = data.frame.iloc[rows]
        numeric = frame[list(NUMERIC)].to_numpy(dtype=np.float64)
        scale = numeric.std(axis=0)
        return cls(
            vocabularies=tuple(tuple(sorted(set(frame[c].tolist()))) for c in CATEGORICAL),
            numeric_mean=numeric.mean(axis=0),
            numeric_scale=np.where(scale > 0, scale, 1.0),
        )

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Codes per column including the unknown code 0."""
        return tuple(len(vocabulary) + 1 for vocabulary in self.vocabularies)

    def spec(
        self, *, embedding_dim: int = 4, hidden: int = 32, dropout: float = 0.0
    ) -> ProfileSpec:
        return ProfileSpec(
            n_numeric=len(NUMERIC),
            cardinalities=self.cardinalities,
            embedding_dim=embedding_dim,
            hidden=hidden,
            dropout=dropout,
        )

    def encode(
        self, data: TelcoData, rows: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Raw numeric features (n, 3) float32 and category codes (n, 16) int64 of ``rows``."""
        frame = data.frame.iloc[rows]
        numeric = frame[list(NUMERIC)].to_numpy(dtype=np.float32)
        codes = np.zeros((len(rows), len(CATEGORICAL)), dtype=np.int64)
        for j, (column, vocabulary) in enumerate(zip(CATEGORICAL, self.vocabularies, strict=True)):
            index = {value: code + 1 for code, value in enumerate(vocabulary)}
            codes[:, j] = [index.get(value, 0) for value in frame[column].tolist()]
        return numeric, codes

    def describe(self) -> dict[str, object]:
        return {
            "numeric": list(NUMERIC),
            "numeric_mean": [round(float(x), 6) for x in self.numeric_mean],
            "numeric_scale": [round(float(x), 6) for x in self.numeric_scale],
            "categorical_codes_with_unknown": dict(
                zip(CATEGORICAL, self.cardinalities, strict=True)
            ),
        }


def churn_rate(data: TelcoData, rows: Sequence[int] | NDArray[np.int64]) -> float:
    return float(data.churn[np.asarray(rows, dtype=np.int64)].mean())
