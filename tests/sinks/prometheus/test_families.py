"""The declared families are exactly the spec's tables: names, types, label names, which are the busiest's."""

from lora_telemetry.sinks.prometheus.families import FAMILIES
from tests.spec import spec_families


def test_every_spec_metric_is_declared_with_its_type_and_labels():
    declared = {f.name: (f.type, f.labels, f.busiest) for f in FAMILIES}
    assert declared == spec_families()


def test_spec_has_all_sections():
    assert len(spec_families()) == 36


def test_names_follow_prometheus_conventions():
    for family in FAMILIES:
        assert family.name.startswith("sglang_lora_")
        assert family.name.endswith("_total") == (family.type == "counter"), family.name
        assert family.help and family.help.endswith(".")
