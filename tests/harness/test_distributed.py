"""One run over 2 processes (torchrun, gloo on CPU) equals a single-process run with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GLUE, ROOT

ARGS = ["model=tiny_bert", "+model.from_config.hidden_dropout_prob=0", "+model.from_config.attention_probs_dropout_prob=0",
        "method.dropout=0", "tracking=none", "train.max_steps=12", "train.eval_every=6", "train.log_every=4",
        "train.batch_size=8", "task.max_train_samples=128", "task.max_eval_samples=64", "train.progress=false",
        "method.lr=5e-3"]


def launch(cmd: list[str], run_dir: Path) -> dict:
    env = {**os.environ, "GLUE_DIR": str(GLUE), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*cmd, *ARGS, f"hydra.run.dir={run_dir}"], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_ddp_two_processes_match_single(method: str, tmp_path: Path) -> None:
    extra = [f"method={method}"] + (["method.deltaT=1", "method.tinit=2", "method.tfinal=4"] if method == "adalora" else [])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "harness", *extra]
    single = [sys.executable, "-m", "harness", *extra]
    a = launch(torchrun, tmp_path / "ddp")
    b = launch(single, tmp_path / "single")
    assert a["eval/loss"] == pytest.approx(b["eval/loss"], abs=1e-5)
    assert a["eval/accuracy"] == b["eval/accuracy"]
    if method == "adalora":
        assert a["adalora/final_ranks"] == b["adalora/final_ranks"]  # the rank pattern survives DDP
    run = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert run["world_size"] == 2 and run["status"] == "done"
    losses = lambda d: [json.loads(x).get("train/loss") for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "single"), abs=1e-5)
