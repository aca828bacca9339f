"""One codec for the journal: what a run writes is what ``mltrack sync`` reads."""

from __future__ import annotations

import json

import pytest

from mltrack.tracking import records
from mltrack.tracking.records import (
    Artifact,
    Inputs,
    Point,
    Register,
    Values,
    decode,
    encode,
    next_unit,
)

EVERY_KIND = [
    Point("val_loss", 0.25, 3, 1_700_000_000_123),
    Point("loss", float("nan"), 0, 1),
    Values("params", (("batch_size", "64"), ("precision", "mixed_bf16"))),
    Values("tags", (("outcome", "completed"),)),
    Artifact("/spool/abc.files/1a2b/model.json", "model"),
    Artifact("/spool/abc.files/3c4d/results.md", None),
    Inputs((("training", (("name", "digits"), ("digest", "a1b2"), ("source", "sklearn"))),)),
    Register("digits-cnn", "model"),
]


@pytest.mark.parametrize("record", EVERY_KIND, ids=lambda r: type(r).__name__)
def test_what_is_written_is_what_is_read(record):
    line = json.loads(json.dumps(encode(record)))  # through the journal's text form
    back = decode(line)
    if isinstance(record, Point) and record.value != record.value:  # NaN != NaN
        assert isinstance(back, Point) and back.value != back.value
        assert (back.key, back.step, back.timestamp_ms) == (record.key, 0, 1)
    else:
        assert back == record


def test_version_1_tags_records_still_read():
    assert decode({"type": "tags", "tags": {"a": "1"}}) == Values("tags", (("a", "1"),))


def test_control_lines_and_unknown_types_are_not_records():
    for kind in (*records.CONTROL, "mystery"):
        with pytest.raises(ValueError, match="not a record"):
            decode({"type": kind})


def test_a_unit_is_a_run_of_points_or_one_record():
    queue: list[records.Record] = [Point("m", float(i), i, i) for i in range(1500)]
    queue.append(Values("tags", ()))
    assert len(next_unit(queue)) == 1000
    assert next_unit(queue[1000:]) == queue[1000:1500]
    assert next_unit(queue[1500:]) == [Values("tags", ())]
