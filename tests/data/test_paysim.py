"""The PaySim CSV checks on small files in the real schema, and the simulator's behaviour."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mltrack.studies.data import DataUnavailable, paysim

HEADER = ",".join(paysim.COLUMNS)
ROWS = [
    "1,PAYMENT,9839.64,C1231006815,170136.0,160296.36,M1979787155,0.0,0.0,0,0",
    "1,TRANSFER,181.0,C1305486145,181.0,0.0,C553264065,0.0,0.0,1,0",
    "1,CASH_OUT,181.0,C840083671,181.0,0.0,C38997010,21182.0,0.0,1,0",
    "1,DEBIT,5337.77,C712410124,41720.0,36382.23,C195600860,41898.0,40348.79,0,0",
]


def write(tmp_path, lines):
    path = tmp_path / paysim.FILENAME
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_the_kaggle_schema(tmp_path):
    frame = paysim.read_csv(write(tmp_path, [HEADER, *ROWS]))
    assert list(frame.columns) == list(paysim.USED)  # what training reads, not the names
    assert frame["isFraud"].tolist() == [0, 1, 1, 0]
    assert frame["type"].tolist() == ["PAYMENT", "TRANSFER", "CASH_OUT", "DEBIT"]
    assert frame["amount"].dtype.kind == "f"
    assert len(paysim.read_csv(write(tmp_path, [HEADER, *ROWS]), rows=2)) == 2


def test_missing_file_names_it_and_where_to_get_it(tmp_path):
    with pytest.raises(DataUnavailable, match=rf"{paysim.FILENAME} not found in .*kaggle"):
        paysim.read_csv(tmp_path / paysim.FILENAME)


def test_wrong_columns(tmp_path):
    header = HEADER.replace("oldbalanceOrg", "oldBalance")
    with pytest.raises(DataUnavailable, match=r"missing column\(s\) oldbalanceOrg; expected"):
        paysim.read_csv(write(tmp_path, [header, *ROWS]))


def test_non_numeric_amount_names_the_row(tmp_path):
    rows = [*ROWS[:2], ROWS[2].replace("181.0,C840", "lots,C840")]
    with pytest.raises(
        DataUnavailable,
        match=r"column 'amount' has a non-numeric value 'lots' "
        r"at data row 3",
    ):
        paysim.read_csv(write(tmp_path, [HEADER, *rows]))


@pytest.mark.parametrize("rows", [0, 3])
@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("181.0,C840", ",C840", "column 'amount' is empty at data row 3"),
        ("21182.0,0.0,1", "21182.0,x,1", "column 'newbalanceDest' has a non-numeric value 'x'"),
        ("1,CASH_OUT", ",CASH_OUT", "column 'step' is empty at data row 3"),
        ("1,CASH_OUT", "1,", "column 'type' is empty at data row 3"),
    ],
)
def test_every_bad_value_names_its_row_on_both_read_paths(tmp_path, rows, old, new, message):
    """The whole file and a prefix (``--rows``) name the same bad value."""
    bad = [*ROWS[:2], ROWS[2].replace(old, new, 1), ROWS[3]]
    with pytest.raises(DataUnavailable, match=re.escape(message)):
        paysim.read_csv(write(tmp_path, [HEADER, *bad]), rows=rows)


def test_unknown_type(tmp_path):
    with pytest.raises(DataUnavailable, match=r"unknown transaction type\(s\) \['WIRE'\]"):
        paysim.read_csv(write(tmp_path, [HEADER, ROWS[0].replace("PAYMENT", "WIRE")]))


def test_simulator_follows_the_published_behaviour():
    frame = paysim.simulate(200_000, seed=3)
    assert list(frame.columns) == list(paysim.COLUMNS)
    fraud = frame[frame["isFraud"] == 1]
    assert set(fraud["type"]) == {"TRANSFER", "CASH_OUT"}  # fraud only there
    assert 0.0008 < len(fraud) / len(frame) < 0.002  # rare, about 0.13%
    assert (fraud["newbalanceOrig"] == 0).all()  # the origin account is emptied
    assert np.allclose(fraud["amount"], fraud["oldbalanceOrg"], rtol=1e-6)
    flagged = frame[frame["isFlaggedFraud"] == 1]
    assert (flagged["type"] == "TRANSFER").all() and (flagged["amount"] > 200_000).all()
    shares = frame["type"].value_counts(normalize=True)
    assert shares["CASH_OUT"] > shares["TRANSFER"] > shares["DEBIT"]
    assert paysim.simulate(1000, seed=3).equals(paysim.simulate(1000, seed=3))


def test_seed_features_are_the_notebooks_seven_columns_label_encoded():
    frame = paysim.simulate(10_000, seed=1)
    x, y = paysim.seed_features(frame)
    assert x.shape == (10_000, 7) and y.sum() == frame["isFraud"].sum()
    # LabelEncoder's codes: the types in sorted order.
    from sklearn.preprocessing import LabelEncoder

    assert (x[:, 1] == LabelEncoder().fit_transform(frame["type"])).all()
    assert np.allclose(x[:, 2], frame["amount"].to_numpy(np.float32))
    ds = paysim.dataset(frame, "sim", "test", seed=7)  # the seed's split: random_state 42
    assert ds.x_train.shape == (8000, 7)
    assert np.array_equal(ds.y_test, paysim.dataset(frame, "sim", "test", seed=8).y_test)


def test_smote_evens_the_classes_with_synthetic_positives():
    ds = paysim.dataset(paysim.simulate(20_000, seed=1), "sim", "test", seed=0)
    x, y, weights = paysim.balance(ds.x_train, ds.y_train, "smote", seed=0)
    assert weights is None and y.sum() == (y == 0).sum() == (ds.y_train == 0).sum()
    assert len({tuple(row) for row in x[y == 1]}) > ds.y_train.sum()  # new rows, not copies


def test_dataset_is_stratified_and_standardised():
    ds = paysim.dataset(paysim.simulate(50_000, seed=1), "sim", "test", seed=0, kind="engineered")
    assert ds.x_train.shape[1] == ds.x_test.shape[1] == 13
    assert abs(ds.y_train.mean() - ds.y_test.mean()) < 0.001
    assert np.allclose(ds.x_train.mean(0), 0, atol=1e-3)
