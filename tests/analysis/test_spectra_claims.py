"""Claims as data, their contrasts (which runs, which values per seed) and the verdict step. The decision API
(analysis.stats.decide / decide_family, another engineer's) is replaced here by a small stand-in that records
its calls; its own tests check it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis import stats
from analysis import spectra_claims as C
from analysis.errors import BadOption


@dataclass(frozen=True)
class FakeDecision:
    estimate: float
    low: float
    high: float
    n: int
    paired: bool
    p: float
    p_adj: float
    p_equiv_adj: float
    verdict: str
    low_n: bool = False


def _fake_decide(a, b=None, *, margin, paired, higher_is_better=True, alpha=0.05, reference=None) -> FakeDecision:
    a, b = np.asarray(a, float), np.asarray(b, float)
    t = st.ttest_rel(a, b) if paired else st.ttest_ind(a, b, equal_var=False)
    est = float(np.mean(a - b)) if paired else float(a.mean() - b.mean())
    word = "better" if t.pvalue < alpha and est > 0 else "worse" if t.pvalue < alpha else "undetermined"
    return FakeDecision(est, est - 1, est + 1, len(a), paired, float(t.pvalue), float(t.pvalue), 1.0, word)


@pytest.fixture
def fake_stats(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Records every call of ``stats.decide``: the real decision API when this tree has it (after the merge of
    issue "Verdicts"), else a stand-in (t-test, Bonferroni for the family)."""
    calls: list[dict[str, Any]] = []
    real = hasattr(stats, "decide") and hasattr(stats, "decide_family")
    impl = stats.decide if real else _fake_decide

    def spy(a, b=None, **kw):
        calls.append({"a": list(map(float, a)), "b": list(map(float, b)), "margin": kw["margin"],
                      "paired": kw["paired"], "hib": kw.get("higher_is_better", True)})
        return impl(a, b, **kw)

    monkeypatch.setattr(stats, "decide", spy, raising=False)
    if not real:
        monkeypatch.setattr(stats, "decide_family", lambda ds, alpha=0.05: [replace(d, p_adj=min(1.0, d.p * len(ds)))
                                                                           for d in ds], raising=False)
    return calls


def _runs_and_measures() -> tuple[pd.DataFrame, pd.DataFrame]:
    """full (no budget, lr 1e-4) and lora r=4 at lr 1e-3 and 4e-3, seeds 0-4, steps 5 and 10; matrices m1, m2 (full:
    m1 only at step 10, so comparisons use m1); intruders: step + (lora: 3 + seed²/10, +2 at the high lr; full:
    seed/10); effective rank: minus that."""
    runs, rows = [], []
    for method, budget, lr in (("full", math.nan, 1e-4), ("lora", 4.0, 1e-3), ("lora", 4.0, 4e-3)):
        for seed in range(5):
            d = f"/x/{method}_{lr:g}_{seed}"
            runs.append({"run_dir": d, "run": d, "method": method, "method_label": None, "method_color": None,
                         "budget": budget, "lr": lr, "seed": seed, "task": "sst2", "model": "m", "total_steps": 10})
            for step in (5, 10):
                for m in ("m1", "m2") if method != "full" or step == 5 else ("m1",):
                    v = seed / 10 if method == "full" else 3 + seed**2 / 10 + (2 if lr > 2e-3 else 0) + (m == "m2") * 100
                    for meas, val in (("intruders", v + step), ("effective_rank", -v)):
                        rows.append({**runs[-1], "step": step, "matrix": m, "measure": meas, "value": val, "form": "x"})
    return pd.DataFrame(runs), pd.DataFrame(rows)


def test_the_default_claims_file_loads() -> None:
    claims = C.load_claims()
    assert {c.kind for c in claims} == set(C.KINDS) and len(claims) == 4


@pytest.mark.parametrize("text, match", [
    ("claims: []", "no 'claims:' list"),
    ("claims: [{kind: bogus}]", "kind 'bogus'"),
    ("claims: [{id: x, text: t, kind: methods, measure: intruders, margin: 1, a: p}]", "missing b"),
    ("claims: [{id: x, text: t, kind: methods, measure: nope, margin: 1, a: p, b: q}]", "measure 'nope'"),
    ("claims: [{id: x, text: t, kind: lr, measure: intruders, margin: 0, method: p}]", "margin must be"),
    ("claims: [{id: x, text: t, kind: lr, measure: intruders, margin: 1, method: p, extra: 1}]", "unknown keys"),
    ("claims: [", "unreadable"),
])
def test_bad_claims_files_are_named(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(BadOption, match=match) as e:
        C.load_claims(f)
    assert str(f) in str(e.value)


def test_contrasts_take_one_value_per_run_over_the_shared_matrices(fake_stats: list) -> None:
    runs, measures = _runs_and_measures()
    claim = C.Claim("c", "lora > full", "methods", "intruders", 0.5, a="lora", b="full")
    cs = C.contrasts(claim, measures, runs, pd.DataFrame())
    assert [(c.a, c.b) for c in cs] == [("LoRA r=4 lr=0.001", "Full FT"), ("LoRA r=4 lr=0.004", "Full FT")]
    # the final step (10); only m1 is shared there, so lora's m2 (+100) never enters
    assert cs[0].a_values == pytest.approx({s: 13 + s**2 / 10 for s in range(5)})
    assert cs[0].b_values == pytest.approx({s: 10 + s / 10 for s in range(5)})
    lr = C.contrasts(C.Claim("l", "lr", "lr", "intruders", 0.5, method="lora"), measures, runs, pd.DataFrame())
    assert len(lr) == 1 and lr[0].a.endswith("lr=0.004") and lr[0].b.endswith("lr=0.001")
    # both lora configurations have m1 and m2: their mean
    assert lr[0].a_values == pytest.approx({s: 65 + s**2 / 10 for s in range(5)})


def test_verdicts_pair_seeds_and_read_the_decision(fake_stats: list) -> None:
    runs, measures = _runs_and_measures()
    claims = [C.Claim("c", "lora > full", "methods", "intruders", 0.5, a="lora", b="full"),
              C.Claim("e", "full erank > lora", "methods", "effective_rank", 1.0, a="full", b="lora"),
              C.Claim("n", "absent", "methods", "intruders", 0.5, a="nothing", b="full")]
    v = C.evaluate(claims, measures, runs, pd.DataFrame())
    assert fake_stats[0] == {"a": pytest.approx([13 + s**2 / 10 for s in range(5)]),
                             "b": pytest.approx([10 + s / 10 for s in range(5)]), "margin": 0.5, "paired": True,
                             "hib": True}
    got = dict(zip(zip(v["claim"], v["a"].fillna("")), v["reading"]))
    assert got[("c", "LoRA r=4 lr=0.001")] == "supports" and got[("e", "Full FT")] == "supports"
    assert got[("n", "")].startswith("not measured")
    assert (v.loc[v["claim"] == "c", "p_adj"] >= v.loc[v["claim"] == "c", "p"]).all()  # adjusted in a family of 2
    md = C.markdown(v)
    assert md.count("\n") == 2 + len(v) - 1 and "supports" in md


def test_unequal_seeds_go_unpaired(fake_stats: list) -> None:
    runs, measures = _runs_and_measures()
    keep = ~((measures["method"] == "full") & (measures["seed"] == 4))
    C.evaluate([C.Claim("c", "t", "methods", "intruders", 0.5, a="lora", b="full")], measures[keep], runs, pd.DataFrame())
    assert [c["paired"] for c in fake_stats] == [False, False] and len(fake_stats[0]["b"]) == 4


def test_similarity_claim_compares_phi_to_the_reference_per_seed(fake_stats: list) -> None:
    runs, measures = _runs_and_measures()
    runs = pd.concat([runs, runs[runs["method"] == "lora"].assign(method="dora",
                                                                   run_dir=lambda r: r["run_dir"] + "d")])
    measures = pd.concat([measures, measures[measures["method"] == "lora"].assign(method="dora",
                                                                               run_dir=lambda r: r["run_dir"] + "d")])
    sims = []
    for r in runs[runs["method"] != "full"].itertuples():
        ref = f"/x/full_0.0001_{r.seed}"
        for m, phi in (("m1", 0.2 + (r.method == "dora") * 0.1 + r.seed / 100), ("m2", 0.5)):
            sims.append({"kind": "reference", "run_a": r.run_dir, "run_b": ref, "cond_b": "Full FT", "seed_a": r.seed,
                         "method_b": "full", "matrix": m, "phi": phi})
    claim = C.Claim("s", "dora closer", "similarity", "phi", 0.02, a="dora", b="lora", reference="full")
    cs = C.contrasts(claim, measures, runs, pd.DataFrame(sims))
    assert len(cs) == 4  # DoRA at 2 lrs × LoRA at 2 lrs (same budget), against the one full FT configuration
    assert cs[0].a_values == pytest.approx({s: 0.4 + s / 200 for s in range(5)})
    assert cs[0].b_values == pytest.approx({s: 0.35 + s / 200 for s in range(5)})
