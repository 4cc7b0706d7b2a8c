"""Parameters: budgets parse, bad values name their field, updates are live and atomic."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.errors import ConfigError
from tinyserve_core.selection import Budget, PageSelector, make_policy, policy_parameters


@pytest.mark.parametrize("value,tokens,fraction", [
    (256, 256, None), ("256", 256, None), (512.0, 512, None),
    (0.125, None, 0.125), ("1/8", None, 0.125), ("25%", None, 0.25), (1.0, None, 1.0), (1, None, 1.0),
])
def test_budget_parses(value, tokens, fraction):
    b = Budget.parse("budget", value)
    assert (b.tokens, b.fraction) == (tokens, fraction)


def test_budget_rounds_up_to_pages():
    lens = torch.tensor([2048, 2050, 10], dtype=torch.int32)
    assert Budget(tokens=100).pages(lens, 16).tolist() == [7, 7, 7]
    assert Budget(fraction=0.125).pages(lens, 16).tolist() == [16, 17, 1]
    assert Budget(fraction=1.0).pages(lens, 16).tolist() == [128, 129, 1]
    assert str(Budget(fraction=0.125)) == "1/8" and str(Budget(tokens=64)) == "64"


@pytest.mark.parametrize("policy,params,field", [
    ("quest", {"budget": 0}, "budget"),
    ("quest", {"budget": 0.0}, "budget"),
    ("quest", {"budget": -5}, "budget"),
    ("quest", {"budget": "lots"}, "budget"),
    ("quest", {"budget": 1.5}, "budget"),
    ("quest", {"budget": True}, "budget"),
    ("quest", {"budget": "3/2"}, "budget"),
    ("quest", {"sink_pages": -1}, "sink_pages"),
    ("quest", {"dense_layers": "two"}, "dense_layers"),
    ("quest", {"dense_layers": 1.5}, "dense_layers"),
    ("quest", {"top_p_mass": 0.9}, "top_p_mass"),          # not a quest parameter
    ("adaptive", {"top_p_mass": 0}, "top_p_mass"),
    ("adaptive", {"top_p_mass": 1.01}, "top_p_mass"),
    ("adaptive", {"top_p_mass": float("nan")}, "top_p_mass"),
    ("adaptive", {"min_budget": 512, "budget": 256}, "min_budget"),
    ("h2o", {"recent_pages": -2}, "recent_pages"),
    ("streaming", {"sink_pages": "x"}, "sink_pages"),
    ("nope", {}, "policy"),
])
def test_bad_parameters_name_the_field(policy, params, field):
    with pytest.raises(ConfigError) as e:
        make_policy(policy, **params)
    assert e.value.field == field
    assert str(e.value).startswith(f"{field}: ")


def test_update_is_all_or_nothing():
    pol = make_policy("adaptive", top_p_mass=0.8)
    with pytest.raises(ConfigError):
        pol.update(top_p_mass=0.5, budget=-1)
    assert pol.params.top_p_mass == 0.8
    pol.update(top_p_mass=0.5, budget="1/4")
    assert pol.params.top_p_mass == 0.5 and pol.params.budget == Budget(fraction=0.25)
    assert pol.describe() == {"policy": "adaptive", "top_p_mass": 0.5, "budget": "1/4", "min_budget": "0",
                              "sink_pages": 0, "dense_layers": 2}
    assert policy_parameters("adaptive") == ("budget", "dense_layers", "min_budget", "sink_pages", "top_p_mass")


def test_selector_switches_policy_live(make_kv):
    kv, tables, lens = make_kv([256])
    layer = type("A", (), {"scale": 0.25})()
    sel = PageSelector("dense")
    q = torch.randn(1, 4, 16)
    assert sel.select(layer, q, kv, 0, tables, lens, [0]) is None
    sel.set_policy("quest", budget=64, dense_layers=0)
    assert (sel.select(layer, q, kv, 0, tables, lens, [0]) >= 0).sum(-1).tolist() == [[4, 4]]
    sel.update(budget=32)
    assert (sel.select(layer, q, kv, 0, tables, lens, [0]) >= 0).sum(-1).tolist() == [[2, 2]]
    with pytest.raises(ConfigError):
        sel.set_policy("quest", budget=0)
    assert sel.policy.params.budget == Budget(tokens=32)  # a bad switch changes nothing


def test_engine_builds_and_retunes_the_selector_with_its_config_keys(make_kv):
    from tinyserve_core.selection import build_selector
    engine_keys = dict(policy="quest", budget=256.0, top_p_mass=0.9, sink_pages=1, dense_layers=2,
                       recent_pages=2, tier_pages=0, tier_policy="lru", stats=False)
    sel = build_selector(**engine_keys)
    assert sel.describe() == {"policy": "quest", "budget": "256", "sink_pages": 1, "dense_layers": 2,
                              "tier_pages": None, "tier_policy": None, "stats": False}
    sel.update(**{**engine_keys, "policy": "adaptive", "budget": 0.25, "tier_pages": 8, "stats": True})
    assert sel.policy.name == "adaptive" and sel.policy.params.top_p_mass == 0.9
    assert sel.tiers.capacity_pages == 8 and sel.stats is not None
    sel.update(**{**engine_keys, "tier_pages": 4, "tier_policy": "lfu"})
    assert sel.policy.name == "quest" and (sel.tiers.capacity_pages, sel.tiers.policy) == (4, "lfu")
    assert sel.stats is None
    sel.update(tier_pages=0)
    assert sel.tiers is None
    for bad, field in (({"top_p_mass": 2.0}, "top_p_mass"), ({"colour": 1}, "colour"), ({"stats": "yes"}, "stats"),
                       ({"tier_policy": "fifo", "tier_pages": 3}, "tier_policy"), ({"policy": "x"}, "policy")):
        with pytest.raises(ConfigError) as e:
            sel.update(**bad)
        assert e.value.field == field
    assert sel.policy.name == "quest" and sel.tiers is None  # failed updates changed nothing
