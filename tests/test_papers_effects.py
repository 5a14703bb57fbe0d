"""The ESMM-paper knobs of synthetic-funnel, the part 2 / part 3 verdicts and their recomputation from stored values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.verdict import t_interval, verdict
from workflow.data.datasets.synthetic_funnel import OPTIONS, build, generate
from workflow.data.errors import DataError

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "results.json"


def _world(opts: dict, seed: int = 0) -> dict:
    return generate(seed, {**OPTIONS, "n_rows": 60_000, "n_users": 3_000, "n_items": 2_000, "n_dense": 0, **opts})


def _effects(cols: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per-impression CTR and CVR logits recovered from the true probabilities (intercepts are constants)."""
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    return logit(cols["true_pctr"].astype(np.float64)), logit(cols["true_pcvr"].astype(np.float64))


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_effect_corr_sets_the_correlation_of_ctr_and_cvr_effects(rho):
    ctr, cvr = _effects(_world({"effect_corr": rho, "zipf": 0.05}))  # near-uniform ids: every effect weighs alike
    # user + item effects, each pair correlated rho with equal spreads: the sum is correlated rho too
    assert np.corrcoef(ctr, cvr)[0, 1] == pytest.approx(rho, abs=0.05)
    assert np.std(cvr) == pytest.approx(np.std(ctr), rel=0.1)  # the CVR effects keep their spread


def test_item_zipf_leaves_more_items_without_clicks():
    def zero_click_share(z: float) -> float:
        cols = _world({"item_zipf": z})
        clicks = np.bincount(cols["item_id"], weights=cols["click"], minlength=2_000)
        return float((clicks == 0).mean())

    shares = [zero_click_share(z) for z in (0.8, 1.1, 1.5)]
    assert shares[0] < shares[1] < shares[2] and shares[2] > 0.5  # most items have no click at all
    assert zero_click_share(1.1) == pytest.approx(shares[1])  # item_zipf=1.1 is the default zipf's tail


def test_hidden_cause_makes_converters_among_clickers_overstate_the_entire_space_cvr():
    plain, hidden = _world({}), _world({"hidden_std": 1.5})
    ratio = lambda c: c["true_pcvr"][c["click"] > 0.5].mean() / c["true_pcvr"].mean()  # noqa: E731
    assert ratio(plain) == pytest.approx(1.0, abs=0.05)  # no selection on CVR without a shared cause
    assert ratio(hidden) > 1.3  # clicked impressions are the ones the hidden cause also pushes to convert


def test_defaults_keep_the_generator_unchanged():
    base = _world({})
    explicit = _world({"effect_corr": 0.0, "item_zipf": None, "hidden_std": 0.0})
    assert all(np.array_equal(base[k], explicit[k]) for k in base)
    assert not np.array_equal(base["true_pcvr"], _world({"effect_corr": 0.5})["true_pcvr"])


@pytest.mark.parametrize("key,value", [("effect_corr", 1.5), ("item_zipf", 0), ("hidden_std", -1), ("effect_corr", True)])
def test_bad_knob_values_name_the_key(key, value):
    with pytest.raises(DataError, match=f"synthetic-funnel: {key}"):
        build(None, 0, 0.1, {"n_rows": 1_000, key: value})


def test_verdict_intervals_winner_and_separation():
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - 4.302653 / np.sqrt(3), 2.0 + 4.302653 / np.sqrt(3)), rel=1e-5)
    v = verdict({"a": [0.70, 0.71, 0.72], "b": [0.60, 0.61, 0.62]})
    assert v["winner"] == "a" and v["separated"] is True
    v = verdict({"a": [0.70, 0.71, 0.72], "b": [0.60, 0.61, 0.62]}, lower_is_better=True)
    assert v["winner"] == "b" and v["separated"] is True
    assert verdict({"a": [0.5, 0.9], "b": [0.6, 0.7]})["separated"] is False  # overlapping intervals
    # with a target the arm closer to it wins; the page still shows the raw means
    v = verdict({"a": [1.1, 1.2, 1.1], "b": [2.0, 2.1, 2.2]}, target=1.0)
    assert v["winner"] == "a" and v["mean"]["b"] == pytest.approx(2.1)


def _stored_verdicts(parts: dict):
    """Every verdict stored in parts 2 and 3 of a results file, with where it sits."""
    for row in parts.get("2", {}).get("result", {}).get("summary", []):
        for key in ("all_models", "sb_vs_mmoe", "gap"):
            if key in row:
                yield f"part 2 p={row['p']} {key}", row[key]
    for cell in parts.get("3", {}).get("result", {}).get("cells", []):
        for scope, metrics in cell["summary"].items():
            for metric, v in metrics.items():
                yield f"part 3 {cell['name']} {scope} {metric}", v


def test_the_published_verdicts_follow_from_their_stored_per_seed_values():
    parts = json.loads(RESULTS.read_text())["parts"]
    stored = list(_stored_verdicts(parts))
    assert stored, "results.json holds no part 2 / part 3 verdicts"
    for where, v in stored:
        again = verdict(v["values"], lower_is_better=v["lower_is_better"], target=v["target"])
        assert (again["winner"], again["separated"]) == (v["winner"], v["separated"]), where
        assert again.get("paired_lead", {}).get("excludes_zero") == v.get("paired_lead", {}).get("excludes_zero"), where
        assert min(len(x) for x in v["values"].values()) >= (20 if where.startswith("part 2") else 10), where


def test_paired_lead_can_separate_what_the_arms_intervals_cannot():
    # a seed effect shared by both arms (0.6 .. 0.7) hides a steady lead of 0.01 in the arms' own intervals
    base = [0.60, 0.65, 0.70, 0.62, 0.68]
    v = verdict({"esmm": [b + 0.01 for b in base], "clicked_only": base})
    assert v["winner"] == "esmm" and v["separated"] is False
    assert v["paired_lead"]["mean"] == pytest.approx(0.01) and v["paired_lead"]["excludes_zero"] is True
    v = verdict({"a": [0.3, 0.31, 0.29], "b": [0.5, 0.52, 0.49]}, lower_is_better=True)
    assert v["winner"] == "a" and v["paired_lead"]["mean"] == pytest.approx(0.2033333, rel=1e-5)


def _esmm():
    import torch

    from mtl_models import ESMM, DenseFeature, SparseFeature

    torch.manual_seed(0)
    features = [SparseFeature("user", 300, 8), SparseFeature("item", 200, 8), DenseFeature("price")]
    model = ESMM(features, ["classification"] * 2, None, [{"dims": [16, 8]}, {"dims": [16, 8]}])
    x = {"user": torch.randint(0, 300, (512,)), "item": torch.randint(0, 200, (512,)), "price": torch.randn(512)}
    return model, x


def test_esmm_towers_read_the_shared_embeddings_and_output_ctr_and_ctr_times_cvr():
    import torch

    model, x = _esmm()
    for training in (True, False):
        model.train(training)
        flat = model.embedding.lookup(x).tensor()  # [B, 17]: the lookup both towers read
        out = model(x)  # [B, 2]
        p_ctr, p_cvr = torch.sigmoid(model.ctr_tower(flat)), torch.sigmoid(model.cvr_tower(flat))
        assert torch.allclose(out[:, :1], p_ctr, atol=1e-6) and torch.allclose(out[:, 1:], p_ctr * p_cvr, atol=1e-6)
        assert torch.allclose(model.predict_cvr(x), p_cvr[:, 0], atol=1e-6)


def test_esmm_cvr_tower_learns_only_through_the_ctcvr_product():
    import torch
    import torch.nn.functional as F

    model, x = _esmm()
    y = torch.stack([torch.ones(512), (torch.arange(512) % 2).float()], dim=1)  # clicked; converted on odd rows
    target = model.training_targets(y)  # [B, 2] = (click, click * conversion)
    pred = model(x)
    F.binary_cross_entropy(pred[:, 0], target[:, 0]).backward(retain_graph=True)  # the CTR loss alone
    assert all(p.grad is None or not p.grad.any() for p in model.cvr_tower.parameters())
    F.binary_cross_entropy(pred[:, 1], target[:, 1]).backward()  # the CTCVR loss reaches the CVR tower
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.cvr_tower.parameters())
    assert torch.equal(target[:, 1], y[:, 1])  # every row clicked: CTCVR label = conversion


def test_part2_models_have_the_papers_equal_size_and_plain_layers():
    import torch

    from bench import mmoe_synthetic as part2
    from mtl_models import DenseFeature

    features, cfg = [DenseFeature(f"x_{i}") for i in range(100)], part2.config(False)
    width = part2.matched_width(features, cfg)
    sizes = {m: part2.n_params(part2.build(m, features, cfg, width)) for m in cfg["models"]}
    assert abs(sizes["SharedBottom"] - sizes["MMOE"]) / sizes["MMOE"] < 0.01 and abs(sizes["PLE"] - sizes["MMOE"]) / sizes["MMOE"] < 0.05
    model = part2.build("MMOE", features, cfg)
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in model.modules())  # the paper's plain ReLU layers


def test_mmoe_trend_is_reproduced_only_when_the_gap_falls_and_its_ends_separate():
    from bench.report.mmoe import GAP, trend

    def row(p, gaps):
        return {"p": p, "gap": verdict({GAP: gaps})}

    falling = [row(0.5, [0.30, 0.32, 0.31]), row(0.9, [0.10, 0.12, 0.11]), row(1.0, [0.0, 0.01, 0.02])]
    assert trend(falling)["reproduced"] is True
    noisy = [row(0.5, [0.3, -0.3, 0.31]), row(0.9, [0.10, 0.12, 0.11]), row(1.0, [0.0, 0.01, 0.02])]
    assert trend(noisy) == {**trend(noisy), "monotone": False, "reproduced": False}
    overlapping = [row(0.5, [0.3, -0.1, 0.2]), row(1.0, [0.0, 0.01, 0.02])]
    t = trend(overlapping)
    assert t["monotone"] is True and t["separated"] is False and t["reproduced"] is False
