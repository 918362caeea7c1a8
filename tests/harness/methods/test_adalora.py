"""AdaLoRA: the measured budget follows the schedule formula, allocation cannot be skipped, the orthogonality
term reaches the gradient, a matrix pruned to rank 0 saves, reloads and draws, the paper preset composes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import torch
import yaml
from peft import PeftModel
from peft.tuners.adalora.layer import RankAllocator
from peft.tuners.adalora.model import AdaLoraModel

from harness.config import to_typed
from harness.errors import ConfigError, RunFailed
from harness.methods.adalora import (PAPER_GLUE, RANKS_FILE, AdaLora, AdaLoraMethodConfig, allocation_steps,
                                     budget_formula, paper_glue)
from harness.models import load_model
from harness.run import Plan, plan, run
from tests.conftest import CONF, TINY, compose_cfg

# tiny_bert: 2 layers × 6 matrices = 12 adapted matrices
N_MATRICES = 12


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_plan(*extra: str, steps: int = 20) -> Plan:
    """A validated tiny AdaLoRA run on RTE (masking every step unless ``extra`` says otherwise)."""
    return plan(compose_cfg([*TINY, "method=adalora", "task=rte", "method.deltaT=1", f"train.max_steps={steps}",
                             *extra]))


def batches(seed: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    while True:
        yield {"input_ids": torch.randint(5, 2000, (8, 16), generator=g),
               "attention_mask": torch.ones(8, 16, dtype=torch.long),
               "labels": torch.randint(0, 2, (8,), generator=g)}


def train_steps(p: Plan, model: torch.nn.Module, steps: int, *, lr: float = 1e-2) -> None:
    """The loop's order: backward, optimizer.step, method.after_optimizer_step, zero_grad."""
    opt = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad], lr=lr)
    data = batches()
    for step in range(1, steps + 1):
        model(**next(data)).loss.backward()
        opt.step()
        p.method.after_optimizer_step(model, step)
        opt.zero_grad()


def wrapped(p: Plan, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return p.method.wrap(load_model(p.cfg.model, p.model_conf), p.targets, p.family.head)


# ------------------------------------------------------------------------------------------ schedule


@pytest.mark.parametrize("T,ti,tf,dT", [(50, 5, 10, 1), (100, 0, 30, 7), (37, 10, 0, 3), (1000, 100, 300, 10)])
@pytest.mark.parametrize("b0,bT", [(108, 72), (864, 576), (13, 12)])
def test_formula_is_peft_schedule(T: int, ti: int, tf: int, dT: int, b0: int, bT: int) -> None:
    """budget_formula (PAPERS.md, code form) equals PEFT's RankAllocator.budget_schedule at every step."""
    stub = SimpleNamespace(peft_config=SimpleNamespace(tinit=ti, tfinal=tf, total_step=T, deltaT=dT),
                           init_bgt=b0, target_bgt=bT)
    for step in range(0, T + 2):
        budget, mask = RankAllocator.budget_schedule(stub, step)
        assert budget == budget_formula(step, b0=b0, bT=bT, total=T, tinit=ti, tfinal=tf), step
        in_phase = ti < step <= T - tf
        assert mask == (step > T - tf or (in_phase and step % dT == 0)), step
    assert budget_formula(ti, b0=b0, bT=bT, total=T, tinit=ti, tfinal=tf) == b0
    assert budget_formula(T - tf, b0=b0, bT=bT, total=T, tinit=ti, tfinal=tf) == bT


@pytest.mark.parametrize("T,tinit,tfinal,dT", [(16, "2", "4", 1), (20, "0.1", "0.3", 2), (18, "3", "0", 3),
                                               (24, "0", "6", 5)])
def test_measured_budget_equals_formula(T: int, tinit: str, tfinal: str, dT: int) -> None:
    """After PEFT's update_and_allocate, Σ non-zero λ equals b(t) of the formula at every mask step."""
    p = tiny_plan(f"method.tinit={tinit}", f"method.tfinal={tfinal}", f"method.deltaT={dT}", "budget=4", steps=T)
    m: AdaLora = p.method  # type: ignore[assignment]
    model = wrapped(p)
    train_steps(p, model, T)
    m.log_metrics(model)
    ti, tf = m.tinit, m.tfinal
    expected_steps = [0, *allocation_steps(total=T, tinit=ti, tfinal=tf, deltaT=dT)]
    if expected_steps[-1] != T:
        expected_steps.append(T)
    assert [r.step for r in m.records] == expected_steps
    b0, bT = N_MATRICES * 6, N_MATRICES * 4
    for rec in m.records:
        f = budget_formula(rec.step, b0=b0, bT=bT, total=T, tinit=ti, tfinal=tf)
        assert rec.formula == f and rec.budget == f
        assert rec.kept == f, f"step {rec.step}: kept {rec.kept} != b(t) {f}"
        assert len(rec.ranks) == N_MATRICES and all(0 <= r <= 6 for r in rec.ranks)
    assert m.records[-1].kept == bT
    # the allocation actually moved between mask steps (not all matrices pruned alike)
    assert len({tuple(r.ranks) for r in m.records}) > 2


def test_log_metrics_budget_kept_and_type_curves() -> None:
    p = tiny_plan("method.deltaT=1", steps=12)
    model = wrapped(p)
    train_steps(p, model, 8)
    row = p.method.log_metrics(model)
    assert row["adalora/budget"] == p.method.budget_at(8)
    assert row["adalora/kept_rank"] == p.method.budget_at(8) and row["adalora/rank_step"] == 8
    types = {k.split("/")[-1] for k in row if k.startswith("adalora/rank/")}
    assert types == {"Wq", "Wk", "Wv", "Wo", "Wf1", "Wf2"}
    mean = sum(row[f"adalora/rank/{t}"] for t in types) / len(types)
    assert math.isclose(mean * N_MATRICES, row["adalora/kept_rank"])


# ------------------------------------------------------------------------------- cannot be skipped


def test_run_records_ranks_and_effective_parameters(tiny_cfg: Any, tmp_path: Path) -> None:
    """A real run through the loop: every mask step recorded and equal to the formula (fails if the loop
    stops calling update_and_allocate), summary with trained and effective parameters, the rank pattern."""
    cfg = tiny_cfg("method=adalora", "task=rte", "train.max_steps=16", "method.deltaT=2", "budget=2",
                   "snapshot.enabled=false", "method.scores_every=4")
    summary = run(cfg, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / RANKS_FILE).read_text().splitlines()]
    header, recs = lines[0], lines[1:]
    assert header["kind"] == "header" and len(header["matrices"]) == N_MATRICES
    assert {m["type"] for m in header["matrices"]} == {"Wq", "Wk", "Wv", "Wo", "Wf1", "Wf2"}
    masked = [r for r in recs if r["phase"] in ("budget", "final")]
    assert masked and all(r["kept"] == r["formula"] == r["budget"] == sum(r["ranks"]) for r in masked)
    assert recs[0]["step"] == 0 and recs[0]["kept"] == header["init_budget"] == N_MATRICES * 3
    assert recs[-1]["step"] == 16 and recs[-1]["kept"] == header["target_budget"] == N_MATRICES * 2

    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [x for x in metrics if "train/loss" in x]
    assert all("adalora/budget" in x and "adalora/kept_rank" in x and "adalora/orth_reg" in x for x in train_rows)
    assert all(x["adalora/orth_reg"] > 0 for x in train_rows)
    assert {k for k in train_rows[-1] if k.startswith("adalora/rank/")} == {f"adalora/rank/{t}" for t in
                                                                            ("Wq", "Wk", "Wv", "Wo", "Wf1", "Wf2")}

    final = summary["adalora/final_ranks"]
    assert len(final) == N_MATRICES and sum(final.values()) == N_MATRICES * 2
    assert [m["rank"] for m in summary["adalora/rank_pattern"]] == recs[-1]["ranks"]
    # parameters: trained = Σ init_r·(d1 + d2 + 1) + head; effective = Σ final rank·(d1 + d2 + 1) + head
    dims = {m["name"]: (m["d_in"], m["d_out"]) for m in header["matrices"]}
    trained = sum(3 * (a + b + 1) for a, b in dims.values())
    effective = sum(final[n] * (a + b + 1) for n, (a, b) in dims.items())
    head = 32 * 2 + 2
    assert summary["adalora/trained_adapter_params"] == trained
    assert summary["adalora/effective_adapter_params"] == effective
    assert summary["trainable_params"] == trained + head
    assert summary["effective_params"] == effective + head
    scores = sorted((tmp_path / "adalora_scores").glob("*.safetensors"))
    assert scores, "scores_every=4 saves the triplet scores in the budget phase"
    from safetensors.torch import load_file

    s = load_file(str(scores[0]))
    assert set(s) == set(dims) and all(v.shape == (3,) for v in s.values())


def test_skipped_allocation_fails_the_run(tiny_cfg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """update_and_allocate that does nothing (AdaLoRA silently acting as LoRA) fails the run with the reason."""
    monkeypatch.setattr(AdaLoraModel, "update_and_allocate", lambda self, step: None)
    cfg = tiny_cfg("method=adalora", "train.max_steps=12", "method.deltaT=1", "snapshot.enabled=false")
    with pytest.raises(RunFailed, match="the mask was not applied"):
        run(cfg, tmp_path)
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["status"] == "failed" and "update_and_allocate" in rec["error"]


def test_loop_without_allocation_hook_fails(tiny_cfg: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop that never calls method.after_optimizer_step cannot produce a 'done' AdaLoRA run."""
    monkeypatch.setattr(AdaLora, "after_optimizer_step", lambda self, model, step: None)
    cfg = tiny_cfg("method=adalora", "train.max_steps=12", "method.deltaT=1", "snapshot.enabled=false")
    with pytest.raises(RunFailed, match="never called"):
        run(cfg, tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


def test_budget_that_never_moved_fails() -> None:
    p = tiny_plan("method.deltaT=1", steps=12)
    model = wrapped(p)
    m: AdaLora = p.method  # type: ignore[assignment]
    m.calls = 12  # as if called, but nothing was masked
    with torch.no_grad():
        for _, e in m._e_params:
            e.fill_(1.0)
    with pytest.raises(RunFailed, match="budget never moved"):
        m.finish(model)


# ------------------------------------------------------------------------------------ orthogonality


def orth_reg(model: torch.nn.Module) -> torch.Tensor:
    """R(P, Q) in PEFT's code form: mean over all A and B of ||AAᵀ − I||_F and ||BᵀB − I||_F (not squared)."""
    terms = []
    for n, p in model.named_parameters():
        if "lora_A" in n:
            terms.append(torch.linalg.matrix_norm(p @ p.T - torch.eye(p.shape[0])))
        elif "lora_B" in n:
            terms.append(torch.linalg.matrix_norm(p.T @ p - torch.eye(p.shape[1])))
    return torch.stack(terms).mean()


def test_orthogonality_term_is_logged_and_changes_the_gradient() -> None:
    batch = next(batches(1))
    grads = {}
    for gamma in (0.0, 0.5):
        p = tiny_plan(f"method.orth_reg_weight={gamma}", "method.dropout=0", steps=12)
        model = wrapped(p)
        out = model(**batch)
        task = torch.nn.functional.cross_entropy(out.logits.float(), batch["labels"])
        logged = p.method.loss_terms(out, task.detach())["adalora/orth_reg"]
        expected = gamma * orth_reg(model)
        assert torch.allclose(logged, expected.detach(), rtol=1e-4, atol=1e-6)
        out.loss.backward()
        grads[gamma] = {n: t.grad.clone() for n, t in model.named_parameters() if "lora_A" in n or "lora_B" in n}
        if gamma:
            # the difference of the gradients is exactly the gradient of γ·R
            model.zero_grad()
            (gamma * orth_reg(model)).backward()
            for n, t in model.named_parameters():
                if n in grads[gamma]:
                    assert torch.allclose(grads[gamma][n] - grads[0.0][n], t.grad, atol=1e-6), n
    diff = max((grads[0.5][n] - grads[0.0][n]).abs().max().item() for n in grads[0.0])
    assert diff > 1e-4, "γ > 0 must change the gradient of P and Q"


# -------------------------------------------------------------------------------------------- scores


def test_triplet_scores_rank_the_kept_triplets() -> None:
    """The saved scores are PEFT's: at a mask step the kept triplets are exactly the top-b(t) scores."""
    p = tiny_plan("method.deltaT=1", "method.tinit=2", "method.tfinal=4", steps=16)
    m: AdaLora = p.method  # type: ignore[assignment]
    model = wrapped(p)
    train_steps(p, model, 6)  # step 6 is a mask step of the budget phase
    scores = m.triplet_scores()
    assert set(scores) == set(m.matrix_names())
    flat = torch.cat([scores[n] for n in m.matrix_names()])
    kept = torch.cat([e.detach().view(-1) != 0 for _, e in m._e_params])
    b = m.budget_at(6)
    assert int(kept.sum()) == b
    top = torch.zeros_like(kept)
    top[flat.topk(b).indices] = True
    assert torch.equal(top, kept)


# --------------------------------------------------------------------------------------- rank 0


def test_matrix_pruned_to_rank_zero_saves_reloads_and_draws(tmp_path: Path) -> None:
    """PEFT #1539: a matrix with no triplet left. Force one (and keep the others as masked), save with the
    harness, reload with PeftModel.from_pretrained: same predictions, r = 0 there; the heatmap shows 0."""
    from analysis.figures_adalora import draw_peft_json

    T = 12
    p = tiny_plan("method.deltaT=1", "method.tinit=2", "method.tfinal=4", "method.dropout=0", steps=T)
    m: AdaLora = p.method  # type: ignore[assignment]
    model = wrapped(p)
    train_steps(p, model, T)
    cfg = model.peft_config["default"]
    zero = "bert.encoder.layer.1.output.dense"  # Wf2 of the top layer, as in the MiniLM pilot
    key = next(k for k in cfg.rank_pattern if k.startswith(zero + ".lora_E"))
    cfg.rank_pattern[key] = [False] * len(cfg.rank_pattern[key])
    model.base_model.rankallocator.mask_using_rank_pattern(model.base_model.model, cfg.rank_pattern)
    final = dict(zip(m.matrix_names(), m.kept_ranks().tolist()))
    assert final[zero] == 0 and sum(v > 0 for v in final.values()) == N_MATRICES - 1

    m.save(model, tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sum(saved["rank_pattern"][zero + ".lora_E"]) == 0

    model.eval()
    batch = next(batches(3))
    batch.pop("labels")
    with torch.no_grad():
        want = model(**batch).logits
    torch.manual_seed(0)
    base = load_model(p.cfg.model, p.model_conf)
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    mod = dict(loaded.named_modules())["base_model.model." + zero]
    assert mod.lora_E["default"].shape == (0, 1) and mod.lora_A["default"].shape[0] == 0
    kept = {n: int(t.shape[0]) for n, t in loaded.named_parameters() if "lora_E" in n}
    assert sorted(kept.values()) == sorted(final.values())
    with torch.no_grad():
        got = loaded(**batch).logits
    assert torch.allclose(got, want, atol=1e-5)

    written, _ = draw_peft_json(tmp_path / "adapter" / "adapter_config.json", tmp_path / "fig")
    assert any(w.suffix == ".png" for w in written) and any(w.suffix == ".pdf" for w in written)
    import pandas as pd

    cells = pd.read_csv(next(w for w in written if w.name.endswith("_final_ranks.csv")))
    assert cells.loc[(cells["row"] == "Wf2") & (cells["layer"] == 1), "mean"].item() == 0
    assert cells["mean"].sum() == sum(final.values())


# ------------------------------------------------------------------------------------- configuration


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="method.init_r"):
        AdaLora.validate_config(AdaLoraMethodConfig(init_r=4, target_r=4))
    with pytest.raises(ConfigError, match="method.target_r"):
        AdaLora.validate_config(AdaLoraMethodConfig(init_r=4, target_r=6))
    with pytest.raises(ConfigError, match="method.scores_every"):
        AdaLora.validate_config(AdaLoraMethodConfig(scores_every=-1))


def test_budget_axis_sets_lora_r_and_adalora_ranks() -> None:
    for b in (1, 2, 4, 8):
        ada = to_typed(compose_cfg([*TINY, "method=adalora", f"budget={b}"])).method
        lora = to_typed(compose_cfg([*TINY, "method=lora", f"budget={b}"])).method
        assert lora.r == ada.target_r == b and ada.init_r == math.ceil(1.5 * b)


@pytest.mark.parametrize("task", ["rte", "sst2", "mrpc", "cola", "stsb"])
def test_paper_preset_per_task(task: str) -> None:
    """adalora_glue: Table 8's lr for both arms; γ, t_i/T, t_f/T and ΔT scaled to the step budget for AdaLoRA."""
    row = PAPER_GLUE[task]
    T_paper = row.epochs * math.ceil(row.train_size / 32)
    for steps in (400, 1200):
        base = ["experiment=adalora_glue", f"task={task}", f"train.max_steps={steps}"]
        ada = to_typed(compose_cfg([*base, "experiment/adalora_glue/method=adalora"]))
        lora = to_typed(compose_cfg([*base, "experiment/adalora_glue/method=lora"]))
        assert ada.method.name == "adalora" and lora.method.name == "lora"
        assert ada.method.lr == lora.method.lr == row.lr
        assert ada.method.orth_reg_weight == row.gamma
        assert math.isclose(ada.method.tinit, row.tinit / T_paper)
        assert math.isclose(ada.method.tfinal, row.tfinal / T_paper)
        assert ada.method.deltaT == max(1, round(row.deltaT * steps / T_paper))
        assert ada.train.batch_size == 32
    assert paper_glue("rte", "deltaT", 1200) == 1 and paper_glue("sst2", "deltaT", 1200) == 2


def test_paper_preset_sweep_and_errors() -> None:
    preset = yaml.safe_load((CONF / "experiment" / "adalora_glue.yaml").read_text())
    params = preset["hydra"]["sweeper"]["params"]
    assert params == {"experiment/adalora_glue/method": "lora,adalora", "budget": "2,4,8", "seed": "0,1,2"}
    with pytest.raises(ConfigError, match="Table 8"):
        paper_glue("custom", "lr")
    with pytest.raises(ConfigError, match="train.max_steps"):
        paper_glue("rte", "deltaT", None)
    # every task's scaled schedule fits in a short run (validated like the sweeper does, before training)
    for task in ("rte", "sst2", "mrpc", "cola", "stsb"):
        p = plan(compose_cfg(["experiment=adalora_glue", f"task={task}", "experiment/adalora_glue/method=adalora",
                              "model=tiny_bert", "train.max_steps=200", "budget=2"]))
        assert p.method.tinit + p.method.tfinal < 200


@pytest.mark.slow
def test_paper_preset_sweep_runs(tmp_path: Path) -> None:
    """``python -m harness -m experiment=adalora_glue task=rte`` on the tiny model: 2 arms, done, figures."""
    import subprocess
    import sys

    from tests.conftest import GLUE, ROOT

    cmd = [sys.executable, "-m", "harness", "-m", "experiment=adalora_glue", "task=rte", "model=tiny_bert",
           "train.max_steps=20", "budget=2", "seed=0", "train.batch_size=8", "task.max_train_samples=64",
           "task.max_eval_samples=32", "train.eval_every=10", "tracking=none", "train.progress=false",
           "snapshot.enabled=false", f"hydra.sweep.dir={tmp_path}"]
    env = {**__import__("os").environ, "GLUE_DIR": str(GLUE)}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    runs = sorted(p.name for p in tmp_path.iterdir() if (p / "run.json").is_file())
    assert runs == ["0_lora_b2_rte_s0", "1_adalora_b2_rte_s0"]
    assert (tmp_path / "1_adalora_b2_rte_s0" / RANKS_FILE).is_file()


def test_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """``python -m benchmarks.bench_adalora``: every variant timed, overheads and the allocator breakdown written."""
    from benchmarks.bench_adalora import main

    out = tmp_path / "bench.json"
    assert main(["--model", "tiny_bert", "--device", "cpu", "--batch-size", "4", "--seq-len", "16", "--steps", "2",
                 "--repeats", "1", "--prologue", "2", "--deltaT", "1", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    res = rep["results"]
    assert set(res) == {"lora", "adalora_no_alloc_no_orth", "adalora_no_alloc", "adalora_warmup",
                        "adalora_budget_dT1", "adalora_final"}
    assert res["lora"]["overhead_vs_lora"] == 0 and all(r["ms_per_step"] > 0 for r in res.values())
    assert "alloc.update_ipt" in res["adalora_warmup"]["breakdown_ms_per_step"]
    assert {"alloc.mask_to_budget", "harness.kept_ranks"} <= set(res["adalora_budget_dT1"]["breakdown_ms_per_step"])
    assert "alloc.mask_using_rank_pattern" in res["adalora_final"]["breakdown_ms_per_step"]
    assert rep["whole_run_ratio"]["dT1"] > 0
    parts = rep["parts"]
    assert set(parts) == {"update_and_allocate/warmup", "update_and_allocate/budget", "update_and_allocate/final",
                          "orth_reg/forward_backward"}
    assert all(r["peft_ms"] > 0 and r["fused_ms"] > 0 and r["peft_syncs"] is None for r in parts.values())


@pytest.mark.gpu
def test_recording_adds_no_host_sync_on_gpu() -> None:
    """On CUDA, the harness's part of a step (recording the ranks) never syncs; the copy waits for a log step.
    PEFT itself syncs inside mask_to_budget (``.item()``, ``.tolist()``), which is not ours to change."""
    p = tiny_plan("method.deltaT=3", "method.tinit=2", "method.tfinal=4", steps=20)
    m: AdaLora = p.method  # type: ignore[assignment]
    dev = torch.device("cuda")
    model = wrapped(p).to(dev)
    opt = torch.optim.AdamW([t for t in model.parameters() if t.requires_grad], lr=1e-2)
    data = batches()
    for step in range(1, 11):
        batch = {k: v.to(dev) for k, v in next(data).items()}
        model(**batch).loss.backward()
        opt.step()
        if m.is_allocation_step(step):
            model.base_model.update_and_allocate(step)  # PEFT's mask step syncs; ours must not
            m.calls += 1
            m._last_step = step
            torch.cuda.set_sync_debug_mode("error")
            try:
                m._pending.append((step, m.kept_ranks()))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        else:
            torch.cuda.set_sync_debug_mode("error")
            try:
                m.after_optimizer_step(model, step)  # importance update only: no sync at all
            finally:
                torch.cuda.set_sync_debug_mode("default")
        opt.zero_grad()
    assert len(m._pending) >= 2
    m.log_metrics(model)  # the one copy to the host
    assert [r.kept for r in m.records[1:]] == [m.budget_at(r.step) for r in m.records[1:]]
