"""Placement options (`learner.cluster`) without Ray: custom resources parsed from YAML dicts or
CLI JSON, clear errors for bad values, SPREAD only when resources are given."""

from __future__ import annotations

import pytest


def test_resources_parse_and_spread():
    from learner.cluster import actor_options, parse_resources

    assert parse_resources('{"rollout": 1}') == {"rollout": 1.0}
    assert parse_resources(None) == {} and parse_resources("") == {}
    opts = actor_options(0.5, {"rollout": 1}, max_restarts=3)
    assert opts == {"max_restarts": 3, "num_cpus": 0.5, "resources": {"rollout": 1.0}, "scheduling_strategy": "SPREAD"}
    assert actor_options(0.5, None) == {"num_cpus": 0.5}  # single node: options unchanged


@pytest.mark.parametrize("bad, match", [("rollout", "JSON object"), ({"rollout": "x"}, "resource name -> amount"),
                                        ({"CPU": 2}, "set by the"), ([1], "mapping")])
def test_bad_resources_are_named(bad, match):
    from learner.cluster import parse_resources

    with pytest.raises(ValueError, match=match):
        parse_resources(bad, "rollout_resources")


def test_runtime_config_rejects_bad_resources():
    from learner.runtime import RuntimeConfig

    with pytest.raises(ValueError, match="runtime config: scorer_resources"):
        RuntimeConfig.from_dict({"scorer_resources": {"GPU": 1}})
