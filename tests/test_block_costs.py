"""One block sum (`hardware_profiles.block_costs`) behind a table profile, a predictor's block table and the
importer's fit: they price a network alike, an unmeasured classifier included."""
from __future__ import annotations

import numpy as np
import pytest

from hardware_profiles import get_profile
from hardware_profiles.block_costs import BlockCosts
from hardware_profiles.importer import AdditiveFit
from predictors.models import LGBMLatencyPredictor, LookupSum
from search_spaces import get_space

CLS = "classifier_k1_s1_e1_none_i64x1x1_o{}x1x1_mobilenetv3"


def test_overhead_counts_once_and_a_classifier_scales_with_its_outputs():
    costs = BlockCosts.measured({"a": 1.5, "b": 0.2, CLS.format(1000): 0.6}, overhead_ms=0.5)
    assert costs.costs == {"a": 1.0, "b": 0.0, CLS.format(1000): pytest.approx(0.1)}
    assert costs.cost(CLS.format(10)) == pytest.approx(0.1 * 10 / 1000)       # same width and family, scaled
    assert costs.cost("classifier_k1_s1_e1_none_i32x1x1_o10x1x1_mobilenetv3") is None   # another width
    assert costs.missing(["a", "zz", "a"]) == ["zz"]
    assert costs.sums([["a", "a", "b"], []]).tolist() == [2.5, 0.5]
    with pytest.raises(KeyError, match="1 block"):
        costs.sums([["a", "zz"]])
    assert costs.sums([["a", "zz"]], fallback=lambda keys: np.full(len(keys), 7.0)).tolist() == [8.5]


def test_a_profile_a_predictor_and_the_importer_price_a_network_of_another_class_count_alike():
    profile = get_profile("x86-ort-t1")
    space = get_space("mobilenet", num_classes=10)          # the table was measured at 1,000 classes
    archs = [space.sample(np.random.default_rng(i)) for i in range(5)]
    keys = [space.cost_keys(a) for a in archs]
    assert all(profile.costs.cost(k[-1]) is not None and k[-1] not in profile.block_ms for k in keys)
    table = [profile.latency(space, a).median_ms for a in archs]
    strings = [space.to_string(a) for a in archs]
    lookup = LookupSum("mobilenet", None, 10, block_table=profile.block_ms, overhead_ms=profile.overhead_ms)
    assert lookup.fit(strings, table).predict(strings) == pytest.approx(table, rel=1e-12)
    blocks_only = LGBMLatencyPredictor("mobilenet", None, 10, block_table=profile.block_ms,
                                       overhead_ms=profile.overhead_ms, correction=False, block_estimators=20)
    assert blocks_only.fit(strings, table).predict(strings) == pytest.approx(table, rel=1e-12)
    net = profile.costs
    fit = AdditiveFit(list(net.costs), np.array(list(net.costs.values())), net.overhead_ms)
    assert all(fit.covers(k) for k in keys) and fit.predict(keys) == pytest.approx(table, rel=1e-12)
