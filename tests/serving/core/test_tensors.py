"""Building V2 tensors from events and shaping outputs: pure functions, checked value by value."""

from __future__ import annotations

import math

import pytest

from vatic.serving.config.base import OutputSpec
from vatic.serving.config.model import ModelSpec
from vatic.serving.core.records import SourceRecord, dead_letter
from vatic.serving.core.tensors import build_inputs, output_value

MODEL = ModelSpec.model_validate(
    {
        "name": "m",
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "columns": ["amount", "card_present", "v:f", "v:f#missing", "channel"],
                "encodings": {"channel": {"web": 0, "pos": 1}},
            },
            {"name": "title", "datatype": "BYTES", "columns": ["title"], "squeeze": True},
            {"name": "n", "datatype": "INT64", "columns": ["count"]},
        ],
        "outputs": [{"name": "y"}],
    }
)


def test_tensors_have_one_row_per_clean_event_in_order():
    events = [
        {"amount": 1.5, "card_present": True, "channel": "pos", "title": "a", "count": 3},
        {"amount": 2, "card_present": False, "channel": "web", "title": b"b", "count": 4.0},
    ]
    tensors, problems = build_inputs(MODEL, events, [{"v:f": 7}, {"v:f": None}], [{}, {"v:f": "NOT_FOUND"}])
    assert problems == {}
    x, title, n = tensors
    assert (x.name, x.datatype.value, x.shape) == ("x", "FP32", (2, 5))
    assert x.data == [1.5, 1.0, 7.0, 0.0, 1.0, 2.0, 0.0, None, 1.0, 0.0]
    assert (title.shape, title.data) == ((2,), ["a", "b"])
    assert (n.shape, n.data) == ((2, 1), [3, 4])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"channel": "fax"}, "channel='fax' is not one of"),
        ({"amount": "12"}, "amount='12' is not a number"),
        ({"count": 1.5}, "count=1.5 is not an integer"),
    ],
)
def test_a_value_that_cannot_be_encoded_fails_only_its_event(bad, message):
    good = {"amount": 1.0, "card_present": True, "channel": "web", "title": "t", "count": 1}
    events = [good, {**good, **bad}, good]
    tensors, problems = build_inputs(MODEL, events, [{}, {}, {}], [{}, {}, {}])
    assert list(problems) == [1]
    assert message in problems[1]
    assert tensors[0].shape == (2, 5)


def test_an_absent_event_field_is_named():
    _, problems = build_inputs(MODEL, [{"amount": 1.0}], [{}], [{}])
    assert problems == {0: "event field 'card_present' is absent"}


def test_outputs_are_shaped_by_index_and_labels():
    assert output_value(OutputSpec(name="p", index=1), [0.2, 0.8]) == 0.8
    assert output_value(OutputSpec(name="c", labels=["a", "b"]), 1) == "b"
    assert output_value(OutputSpec(name="c", labels=["a", "b"]), 1.0) == "b"
    assert output_value(OutputSpec(name="s", labels=["a", "b"]), [0.25, 0.75]) == {"a": 0.25, "b": 0.75}
    assert output_value(OutputSpec(name="t"), b"label") == "label"
    one, nan = output_value(OutputSpec(name="v"), [1, None])
    assert one == 1.0
    assert math.isnan(nan)
    with pytest.raises(ValueError, match="not a class"):
        output_value(OutputSpec(name="c", labels=["a", "b"]), 5)
    with pytest.raises(ValueError, match="no column 3"):
        output_value(OutputSpec(name="p", index=3), [0.1, 0.9])


def test_dead_letter_records_keep_bytes_and_truncate_what_is_too_big():
    from vatic.schemas import AvroCodec, InMemorySchemaStore, load_schema

    source = SourceRecord("in", 2, 41, b"k", b"\x00\x00\x00\x00\x07" + b"z" * 5000, 123, [("h", b"1")])
    record = dead_letter(
        service="svc",
        stage="infer",
        error_class="ModelRejected",
        message="m" * 10_000,
        attempts=2,
        source=source,
        event_id="e1",
        model_name="m",
        model_response=b"r" * 10_000,
        max_value_bytes=1000,
    )
    assert record["value"] == source.value[:1000]
    assert record["error_message"].startswith("[original value of 5005 bytes truncated to 1000] mmm")
    assert len(record["error_message"]) == 4096
    assert len(record["model_response"]) == 4096
    assert record["schema_id"] == 7
    assert (record["topic"], record["partition"], record["offset"]) == ("in", 2, 41)
    codec = AvroCodec(InMemorySchemaStore(), "dlq-value", load_schema("dead_letter"))
    assert codec.decode(codec.encode(record))["value"] == source.value[:1000]


def test_an_other_bucket_catches_unlisted_categories():
    model = ModelSpec.model_validate(
        {
            "name": "m",
            "inputs": [{"name": "x", "datatype": "FP32", "columns": ["c"], "encodings": {"c": {"a": 0, "*": 9}}}],
            "outputs": [{"name": "y"}],
        }
    )
    tensors, problems = build_inputs(model, [{"c": "a"}, {"c": "zz"}], [{}, {}], [{}, {}])
    assert problems == {}
    assert tensors[0].data == [0.0, 9.0]
