"""The use cases' service configs: every environment loads, and they agree with the data, Feast and Avro."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from vatic.cli.commands.usecases import app
from vatic.examples import feast_repo
from vatic.examples.fraud_detection import events as fraud_events
from vatic.examples.layout import CASES, feature_repo_dir, service_dir
from vatic.examples.product_categorization.events import CATEGORIES
from vatic.examples.product_categorization.history import MIX_FEATURES
from vatic.schemas import load_schema
from vatic.serving.config.loader import load_service

ENVIRONMENTS = [None, "staging", "production"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_environment_loads(case, environment):
    config = load_service(service_dir(case), environment)
    assert config.environment == (environment or "local")
    assert config.features is not None
    assert config.streaming is not None
    # the Feast repo named by the config is the use case's
    assert (service_dir(case) / config.features.repo).resolve() == feature_repo_dir(case)
    # every event field the model reads is a field of the input schema
    fields = {f["name"] for f in load_schema(config.streaming.input_schema)["fields"]}
    assert set(config.event_fields()) <= fields
    if environment:
        assert config.features.online_store == "redis"
        assert config.autoscaling is not None
        assert config.registry.stages == [environment]


@pytest.mark.parametrize("case", CASES)
def test_feature_refs_exist_in_the_feast_definitions(case, tmp_path):
    config = load_service(service_dir(case))
    views = {
        obj.name: {field.name for field in obj.features}
        for obj in feast_repo.definitions(case, tmp_path)
        if hasattr(obj, "features")
    }
    for ref in config.features.refs:
        view, name = ref.split(":")
        assert name in views[view], ref
    assert set(config.features.defaults) == set(config.features.refs)


def test_fraud_encodings_cover_every_generated_value():
    tensor = load_service(service_dir("fraud_detection")).model.inputs[0]
    assert set(tensor.encodings["channel"]) == {*fraud_events.CHANNELS, "UNKNOWN"}  # UNKNOWN: the Avro default
    assert set(tensor.encodings["country"]) == set(fraud_events.COUNTRIES)
    assert set(tensor.encodings["merchant_category"]) == set(fraud_events.MCC)
    for table in tensor.encodings.values():  # LightGBM categories: distinct non-negative integers
        codes = sorted(table.values())
        assert codes == list(range(len(codes)))


def test_product_inputs_and_outputs_follow_the_category_order():
    config = load_service(service_dir("product_categorization"))
    text, mix = config.model.inputs
    assert (text.name, text.datatype, text.columns) == ("text", "BYTES", ["title", "description"])
    assert (mix.name, mix.datatype) == ("seller_mix", "FP32")
    assert mix.columns == [f"seller_category_mix:{name}" for name in MIX_FEATURES]
    assert [f"share_{category}" for category in CATEGORIES] == MIX_FEATURES
    assert [(o.name, o.labels) for o in config.model.outputs] == [("category", CATEGORIES), ("scores", CATEGORIES)]
    production = load_service(service_dir("product_categorization"), "production")
    assert production.resources.gpu is not None
    assert (production.resources.gpu.count, production.resources.gpu.type) == (1, "nvidia-l4")
    assert production.autoscaling.kafka_lag is not None


def test_the_cli_refuses_an_unknown_use_case():
    result = CliRunner().invoke(app, ["prepare", "--case", "weather"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "weather" in result.output
