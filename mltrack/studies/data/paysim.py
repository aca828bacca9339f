"""PaySim mobile-money transactions (seed 000): the Kaggle CSV, and a simulator for offline use.

The CSV (``PS_20174392719_1491204439457_log.csv``) has one transaction per row with the
columns in ``COLUMNS``. It is checked before any run starts: a missing file, a missing column,
a non-numeric amount or an unknown transaction type is a one-line error naming the file.

``simulate`` follows the PaySim paper's published behaviour (Lopez-Rojas, Elmir & Axelsson,
EMSS 2016, and the Kaggle description): five transaction types in roughly the published mix;
fraud only in TRANSFER and CASH_OUT, where the fraudster empties the origin account; a rare
positive class (about 0.13%); ``isFlaggedFraud`` for transfers over 200,000.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mltrack.studies.data.core import ArrayDataset, DataUnavailable, one_line

FILENAME = "PS_20174392719_1491204439457_log.csv"
KAGGLE = "https://www.kaggle.com/datasets/ealaxi/paysim1"
COLUMNS = (
    "step",
    "type",
    "amount",
    "nameOrig",
    "oldbalanceOrg",
    "newbalanceOrig",
    "nameDest",
    "oldbalanceDest",
    "newbalanceDest",
    "isFraud",
    "isFlaggedFraud",
)
NUMERIC = (
    "step",
    "amount",
    "oldbalanceOrg",
    "newbalanceOrig",
    "oldbalanceDest",
    "newbalanceDest",
    "isFraud",
    "isFlaggedFraud",
)
TYPES = ("CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER")
# Share of each type in the published data set (6.36 M rows).
TYPE_MIX = {
    "CASH_OUT": 0.352,
    "PAYMENT": 0.338,
    "CASH_IN": 0.220,
    "TRANSFER": 0.084,
    "DEBIT": 0.006,
}
FRAUD_RATE = 0.0013
FLAG_THRESHOLD = 200_000


# The columns training reads (the names are identifiers, dropped; isFlaggedFraud is unused).
USED = (
    *("step", "type", "amount", "oldbalanceOrg", "newbalanceOrig", "oldbalanceDest"),
    *("newbalanceDest", "isFraud"),
)


def read_csv(path: Path, rows: int = 0) -> Any:
    """Read and check a PaySim CSV: the ``USED`` columns of every row, or of the first ``rows``.

    Fast on a file of the real size (6.36 M rows, 470 MB): only the used columns, typed as
    they are parsed (float64, and a category for ``type``), by pandas' C engine: 1.8 s and
    0.8 GB here against 7.5 s and 1.5 GB for every column as parsed then ``to_numeric``; its
    pyarrow engine took 3.7 s and 1.8 GB on these 2 cores (``benchmarks/paysim_load.py``). A
    file that does not parse that way is read again as text to name the first bad value and
    its row. ``DataUnavailable`` (one line naming the file) for a missing
    file or column, a non-numeric or empty value, an unknown type or a label other than 0/1.
    """
    import pandas as pd

    if not path.is_file():
        raise DataUnavailable(
            f"--data-dir: {path.name} not found in {path.parent}; download it from {KAGGLE} "
            "and put it there, or use --dataset simulated offline"
        )
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataUnavailable(f"{path}: not a readable CSV ({one_line(exc)})") from exc
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataUnavailable(
            f"{path}: missing column(s) {', '.join(missing)}; expected the PaySim schema "
            f"{', '.join(COLUMNS)}"
        )
    dtypes = {c: "float64" for c in USED if c != "type"} | {"type": "category"}
    try:
        frame = pd.read_csv(path, usecols=list(USED), dtype=dtypes, nrows=rows or None)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        _explain(path, rows)
        raise
    empty = frame.drop(columns="type").isna().any(axis=1) | frame["type"].isna()
    if empty.any():
        _explain(path, rows)
    unknown = sorted(set(frame["type"].cat.categories) - set(TYPES))
    if unknown:
        raise DataUnavailable(f"{path}: unknown transaction type(s) {unknown}; expected {TYPES}")
    if not frame["isFraud"].isin((0, 1)).all():
        raise DataUnavailable(f"{path}: column 'isFraud' must hold only 0 and 1")
    frame["isFraud"] = frame["isFraud"].astype(np.int64)
    frame["step"] = frame["step"].astype(np.int64)
    return frame


def _explain(path: Path, rows: int) -> None:
    """Raise ``DataUnavailable`` naming the first value of ``path`` that is not a number."""
    import pandas as pd

    try:
        text = pd.read_csv(path, usecols=list(USED), dtype=str, nrows=rows or None)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataUnavailable(f"{path}: not a readable CSV ({one_line(exc)})") from exc
    for column in (c for c in USED if c != "type"):
        values = pd.to_numeric(text[column], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(bad.to_numpy().argmax())
            value = text[column].iloc[row]
            what = "is empty" if pd.isna(value) else f"has a non-numeric value {value!r}"
            raise DataUnavailable(f"{path}: column {column!r} {what} at data row {row + 1}")
    if text["type"].isna().any():
        row = int(text["type"].isna().to_numpy().argmax())
        raise DataUnavailable(f"{path}: column 'type' is empty at data row {row + 1}")


def simulate(rows: int, seed: int = 0) -> Any:
    """A PaySim-style transaction log with the published schema and behaviour."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    kinds = rng.choice(
        list(TYPE_MIX), size=rows, p=np.array(list(TYPE_MIX.values())) / sum(TYPE_MIX.values())
    )
    step = rng.integers(1, 744, size=rows)  # one step is one hour of a 31-day month
    # Amounts are heavy-tailed per type (medians roughly as published).
    median = {
        "CASH_IN": 140_000,
        "CASH_OUT": 150_000,
        "DEBIT": 3_000,
        "PAYMENT": 10_000,
        "TRANSFER": 490_000,
    }
    amount = np.array([median[k] for k in kinds]) * rng.lognormal(0, 1.0, size=rows)
    old_orig = rng.lognormal(10, 2.0, size=rows) * (rng.random(rows) > 0.3)
    old_dest = rng.lognormal(12, 2.0, size=rows) * (rng.random(rows) > 0.4)
    # Fraud: only in TRANSFER and CASH_OUT, about FRAUD_RATE of all rows.
    eligible = np.isin(kinds, ("TRANSFER", "CASH_OUT"))
    fraud = eligible & (rng.random(rows) < FRAUD_RATE / eligible.mean())
    old_orig = np.where(fraud, np.maximum(old_orig, rng.lognormal(12, 1.5, size=rows)), old_orig)
    amount = np.where(fraud, old_orig, amount)  # the fraudster empties the account
    incoming = kinds == "CASH_IN"
    new_orig = np.where(incoming, old_orig + amount, np.maximum(old_orig - amount, 0.0))
    merchant = kinds == "PAYMENT"  # merchants' balances are not recorded in PaySim
    old_dest = np.where(merchant, 0.0, old_dest)
    receives = ~merchant & ~incoming
    new_dest = np.where(
        receives,
        old_dest + amount,
        np.where(incoming, np.maximum(old_dest - amount, 0.0), old_dest),
    )
    # In the published data many fraudulent transfers leave the destination balances at zero.
    blank = fraud & (rng.random(rows) < 0.5)
    old_dest, new_dest = np.where(blank, 0.0, old_dest), np.where(blank, 0.0, new_dest)
    flagged = fraud & (kinds == "TRANSFER") & (amount > FLAG_THRESHOLD)
    ids = rng.integers(10**8, 10**9, size=(2, rows))
    return pd.DataFrame(
        {
            "step": step,
            "type": kinds,
            "amount": amount.round(2),
            "nameOrig": [f"C{i}" for i in ids[0]],
            "oldbalanceOrg": old_orig.round(2),
            "newbalanceOrig": new_orig.round(2),
            "nameDest": [
                ("M" if m else "C") + str(i) for m, i in zip(merchant, ids[1], strict=True)
            ],
            "oldbalanceDest": old_dest.round(2),
            "newbalanceDest": new_dest.round(2),
            "isFraud": fraud.astype(int),
            "isFlaggedFraud": flagged.astype(int),
        }
    )


# The seed notebook's inputs (seed 000): every numeric column but the labels, and the
# transaction type label-encoded (scikit-learn's LabelEncoder: the types in sorted order).
SEED_COLUMNS = (
    "step",
    "type",
    "amount",
    "oldbalanceOrg",
    "newbalanceOrig",
    "oldbalanceDest",
    "newbalanceDest",
)
FEATURES = ("seed", "engineered")


def seed_features(frame: Any) -> tuple[np.ndarray, np.ndarray]:
    """The seed's 7 inputs, unscaled: ``SEED_COLUMNS`` with ``type`` as its index in
    ``TYPES`` (what ``LabelEncoder`` gives), shape (rows, 7) float32; labels int64."""
    kind = np.searchsorted(np.array(TYPES), frame["type"].to_numpy().astype(str))
    columns = [kind if c == "type" else frame[c].to_numpy(float) for c in SEED_COLUMNS]
    x = np.stack([np.asarray(c, np.float32) for c in columns], axis=1)
    return x, frame["isFraud"].to_numpy(np.int64)


def features(frame: Any) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs: type one-hot, log amounts and balances, balance errors, hour of day.

    The balance errors (how far the balances are from "old - amount = new") carry most of the
    signal in PaySim; names are identifiers and are dropped.
    """
    amount = frame["amount"].to_numpy(float)
    err_orig = frame["newbalanceOrig"] + frame["amount"] - frame["oldbalanceOrg"]
    err_dest = frame["oldbalanceDest"] + frame["amount"] - frame["newbalanceDest"]
    columns = [frame["type"].to_numpy() == t for t in TYPES] + [
        np.log1p(amount),
        *(
            np.log1p(frame[c].to_numpy(float))
            for c in ("oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")
        ),
        np.sign(err_orig) * np.log1p(np.abs(err_orig)),
        np.sign(err_dest) * np.log1p(np.abs(err_dest)),
        (frame["step"].to_numpy() % 24) / 23.0,
    ]
    x = np.stack([np.asarray(c, np.float32) for c in columns], axis=1)
    return x, frame["isFraud"].to_numpy(np.int64)


SEED_SPLIT_STATE = 42  # the notebook's train_test_split(..., random_state=42)


def dataset(
    frame: Any,
    name: str,
    source: str,
    seed: int,
    test_fraction: float = 0.2,
    kind: str = "seed",
) -> ArrayDataset:
    """Split 80/20 and standardise with the training split's statistics.

    ``kind`` ``seed``: the notebook's 7 columns and its unstratified split (random_state 42);
    ``engineered``: ``features`` and a split stratified by the label, seeded by ``seed``.
    """
    from sklearn.model_selection import train_test_split

    x, y = seed_features(frame) if kind == "seed" else features(frame)
    if y.sum() < 2:
        raise DataUnavailable(f"{source}: {int(y.sum())} fraudulent rows; need at least 2")
    x_train, x_test, y_train, y_test = train_test_split(
        x,
        y,
        test_size=test_fraction,
        random_state=SEED_SPLIT_STATE if kind == "seed" else seed,
        stratify=None if kind == "seed" else y,
    )
    if y_train.sum() < 2:
        raise DataUnavailable(
            f"{source}: {int(y_train.sum())} fraudulent rows in the training split; need 2"
        )
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    return ArrayDataset(
        name, (x_train - mean) / std, y_train, (x_test - mean) / std, y_test, 2, source
    )


def balance(
    x: np.ndarray, y: np.ndarray, how: str, seed: int
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Handle the rare class (``--imbalance``): SMOTE (the seed's: synthetic positives until the
    classes are even, imbalanced-learn's ``SMOTE``), class weights, negatives undersampled to
    ten per positive, or nothing. Returns the rows, their labels and Keras class weights."""
    if how == "smote":
        from imblearn.over_sampling import SMOTE

        positives = int(y.sum())
        if positives < 2:
            raise DataUnavailable(f"SMOTE: {positives} fraudulent training rows; need at least 2")
        # imbalanced-learn's default is 5 neighbours; fewer positives than that take fewer.
        smote = SMOTE(random_state=seed, k_neighbors=min(5, positives - 1))
        x_out, y_out = smote.fit_resample(x, y)
        return np.asarray(x_out, np.float32), np.asarray(y_out, np.int64), None
    if how == "class_weight":
        counts = np.bincount(y, minlength=2)
        return x, y, {c: len(y) / (2 * counts[c]) for c in (0, 1)}
    if how == "undersample":
        rng = np.random.default_rng(seed)
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        keep = np.concatenate(
            [pos, rng.choice(neg, size=min(len(neg), 10 * len(pos)), replace=False)]
        )
        rng.shuffle(keep)
        return x[keep], y[keep], None
    return x, y, None
