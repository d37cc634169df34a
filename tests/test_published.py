"""The published real-Pi0.5 numbers (data file with provenance) and the wording that compares a report's
degradation with them."""

from __future__ import annotations

import pytest

from sim_eval.analysis.published import (
    compare,
    comparison_text,
    load,
    published_retentions,
    row_rate,
    same_shape,
)


def test_the_data_file_holds_the_verified_numbers_with_provenance():
    sources = {s["id"]: s for s in load()}
    flashrt = {r["arm"]: (r["successes"], r["episodes"]) for r in sources["flashrt_pr48"]["rows"]}
    assert flashrt == {
        "BF16 cache=1": (24, 30),
        "BF16 cache=2": (22, 30),
        "BF16 cache=3": (11, 30),
        "BF16 adaptive cache=3": (21, 30),
    }
    assert "864/867" in next(r["detail"] for r in sources["flashrt_pr48"]["rows"] if r["mode"] == "adaptive3")
    bridge = {(r["suite"], r["mode"]): row_rate(r) for r in sources["latent_bridge"]["rows"]}
    assert [bridge[(s, "cache3")] for s in ("libero_spatial", "libero_object", "libero_goal", "libero_10")] == [
        0.465, 0.575, 0.690, 0.525,
    ]  # fmt: skip
    assert [bridge[(s, "full")] for s in ("libero_spatial", "libero_object", "libero_goal", "libero_10")] == [
        0.987, 0.983, 0.970, 0.940,
    ]  # fmt: skip
    for source in sources.values():
        assert source["url"].startswith("https://") and source["verified"] and source["episodes"]


def test_retention_is_each_mode_over_its_sources_synchronous_rate():
    found = {(r.source, r.suite, r.mode): r.value for r in published_retentions(load())}
    assert found[("flashrt_pr48", "libero_spatial", "cache3")] == pytest.approx(11 / 24)
    assert found[("latent_bridge", "libero_object", "cache3")] == pytest.approx(0.575 / 0.983)


def test_wording_stronger_weaker_and_within():
    published = published_retentions(load())
    spatial = ("libero_spatial",)
    # cache3 on libero_spatial: published 46% (FlashRT 11/24) and 47% (Latent Bridge 46.5/98.7)
    (stronger,) = compare({"cache3": (0.20, spatial)}, published)
    assert stronger.word == "stronger"
    assert stronger.sentence() == (
        "`cache3` keeps 20% of `full`'s success here against 46-47% published "
        "(flashrt_pr48 libero_spatial, latent_bridge libero_spatial): stronger degradation"
    )
    assert compare({"cache3": (0.80, spatial)}, published)[0].word == "weaker"
    assert compare({"cache3": (0.50, spatial)}, published)[0].word == "within the published range"
    # a suite no source ran: every published value of the mode is the range (Latent Bridge's goal suite: 71%)
    assert compare({"cache3": (0.75, ("libero_90",))}, published)[0].word == "within the published range"
    assert compare({"cache7": (0.5, spatial)}, published) == []


def test_shape_same_when_the_modes_rank_alike():
    published = published_retentions(load())
    spatial = ("libero_spatial",)
    # FlashRT: cache2 keeps 92%, cache3 46%: reuse for longer costs more
    assert same_shape({"cache2": (0.95, spatial), "cache3": (0.60, spatial)}, published) is True
    assert same_shape({"cache2": (0.40, spatial), "cache3": (0.90, spatial)}, published) is False
    assert same_shape({"cache3": (0.60, spatial)}, published) is None
    text = comparison_text({"cache2": (0.40, spatial), "cache3": (0.90, spatial)}, load())
    assert "`cache2` keeps 40%" in text and "stronger degradation" in text and "weaker degradation" in text
    assert text.endswith("the degradation has a different shape (the modes rank otherwise by retention).")
    assert comparison_text({"replay2": (0.9, spatial)}, load()) is None
