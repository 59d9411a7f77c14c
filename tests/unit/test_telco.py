"""The Telco churn data: cleaning rules, the sha256 split and the profile encoding."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from memcrm.models import telco
from memcrm.models.telco import (
    CATEGORICAL,
    ID_COLUMN,
    LABEL_COLUMN,
    NUMERIC,
    ProfileEncoding,
    TelcoData,
    default_telco_path,
    load_telco,
    split,
)


@pytest.fixture(scope="module")
def data() -> TelcoData:
    if not default_telco_path().is_file():
        pytest.skip(f"shared data set missing: {default_telco_path()}")
    return load_telco()


def _raw_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_row_is_loaded_and_cleaned(data: TelcoData) -> None:
    raw = _raw_rows(data.path)
    assert len(data) == len(raw)
    assert list(data.customer_ids) == [row[ID_COLUMN] for row in raw]
    assert data.churn.tolist() == [int(row[LABEL_COLUMN] == "Yes") for row in raw]
    assert data.sha256 == hashlib.sha256(data.path.read_bytes()).hexdigest()
    numeric = data.frame[list(NUMERIC)].to_numpy()
    assert np.isfinite(numeric).all()
    for i, row in enumerate(raw):
        if row["TotalCharges"].strip():
            assert data.frame["TotalCharges"].iloc[i] == pytest.approx(float(row["TotalCharges"]))
        else:  # nothing billed yet
            assert float(row["tenure"]) == 0.0
            assert data.frame["TotalCharges"].iloc[i] == 0.0
        assert [data.frame[c].iloc[i] for c in CATEGORICAL] == [row[c] for c in CATEGORICAL]
    assert list(data.features(np.arange(3)).columns) == [*NUMERIC, *CATEGORICAL]


def test_split_is_the_documented_sha256_rule(data: TelcoData) -> None:
    parts = split(data)
    n = len(data)
    assert sorted([*parts.train, *parts.test]) == list(range(n))
    assert set(parts.train).isdisjoint(parts.test)
    assert set(parts.validation) <= set(parts.train)
    assert sorted([*parts.fit, *parts.validation]) == sorted(parts.train)
    assert 0.17 < len(parts.test) / n < 0.23
    assert 0.17 < len(parts.validation) / len(parts.train) < 0.23

    def bucket(key: str) -> int:
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 10

    for i, customer_id in enumerate(data.customer_ids[:300]):
        in_test = bucket(f"telco-split:{customer_id}") in (0, 1)
        assert (i in set(parts.test)) == in_test
        if not in_test:
            assert (i in set(parts.validation)) == (bucket(f"telco-val:{customer_id}") in (0, 1))
    again = split(load_telco(data.path))
    for name in ("train", "validation", "fit", "test"):
        assert np.array_equal(getattr(parts, name), getattr(again, name))


def test_encoding_is_fitted_on_its_rows_only(data: TelcoData) -> None:
    rows = np.arange(0, 400, dtype=np.int64)
    encoding = ProfileEncoding.fit(data, rows)
    numeric = data.frame.iloc[rows][list(NUMERIC)].to_numpy()
    np.testing.assert_allclose(encoding.numeric_mean, numeric.mean(axis=0))
    np.testing.assert_allclose(encoding.numeric_scale, numeric.std(axis=0))
    values, codes = encoding.encode(data, np.arange(len(data), dtype=np.int64))
    assert values.shape == (len(data), len(NUMERIC)) and values.dtype == np.float32
    assert codes.shape == (len(data), len(CATEGORICAL))
    cardinalities = np.asarray(encoding.cardinalities)
    assert (codes >= 0).all() and (codes < cardinalities).all()
    # Rows the encoding was fitted on never get the unknown code; codes follow sorted values.
    assert (codes[rows] > 0).all()
    for j, column in enumerate(CATEGORICAL):
        vocabulary = sorted(set(data.frame[column].iloc[rows]))
        assert encoding.vocabularies[j] == tuple(vocabulary)
        first = data.frame[column].iloc[0]
        assert codes[0, j] == vocabulary.index(first) + 1
    spec = encoding.spec(embedding_dim=3, hidden=8)
    assert spec.n_numeric == len(NUMERIC) and spec.cardinalities == encoding.cardinalities


def test_unseen_categories_get_code_zero(data: TelcoData) -> None:
    encoding = ProfileEncoding.fit(data, np.arange(200, dtype=np.int64))
    frame = data.frame.copy()
    frame.loc[frame.index[0], CATEGORICAL[0]] = "value-not-in-the-data"
    changed = TelcoData(data.path, data.sha256, data.customer_ids, frame, data.churn)
    _, codes = encoding.encode(changed, np.asarray([0], dtype=np.int64))
    assert codes[0, 0] == 0 and (codes[0, 1:] > 0).all()


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = [ID_COLUMN, *CATEGORICAL[:4], "tenure", *CATEGORICAL[4:], "MonthlyCharges"]
    columns += ["TotalCharges", LABEL_COLUMN]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _row(customer: str, tenure: str, total: str, label: str = "No") -> dict[str, str]:
    row = dict.fromkeys(CATEGORICAL, "a")
    row.update(
        {
            ID_COLUMN: customer,
            "tenure": tenure,
            "MonthlyCharges": "10.5",
            "TotalCharges": total,
            LABEL_COLUMN: label,
        }
    )
    return row


def test_bad_rows_are_errors_not_guesses(tmp_path: Path) -> None:
    good = load_telco(_write(tmp_path / "good.csv", [_row("x1", "0", " "), _row("x2", "3", "31")]))
    assert good.frame["TotalCharges"].tolist() == [0.0, 31.0]
    with pytest.raises(ValueError, match="non-zero tenure"):
        load_telco(_write(tmp_path / "blank.csv", [_row("x1", "2", "")]))
    with pytest.raises(ValueError, match="Yes or No"):
        load_telco(_write(tmp_path / "label.csv", [_row("x1", "2", "21", label="maybe")]))
    with pytest.raises(ValueError, match="unique"):
        load_telco(_write(tmp_path / "dup.csv", [_row("x1", "2", "21"), _row("x1", "3", "31")]))
    with pytest.raises(ValueError):
        load_telco(_write(tmp_path / "number.csv", [_row("x1", "2", "lots")]))


def test_default_path_follows_the_data_dir(tmp_path: Path) -> None:
    assert default_telco_path(tmp_path) == tmp_path / telco.RELATIVE_PATH
