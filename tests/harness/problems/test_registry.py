"""The task and problem-type registries: a GLUE-like task is one YAML, a problem type one file; both train."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.problems import PROBLEMS, get_problem, unregister_problem
from harness.run import run
from tests.conftest import TINY, compose_cfg

#: a GLUE-like task, nothing but its YAML (in a config folder of the user's, found through hydra.searchpath)
TASK_YAML = """\
defaults: [/schema/task@_here_, _self_]
name: polarity
folder: Polarity
text_columns: [sentence]
label_column: label
labels: [neg, pos]
metrics: [accuracy, f1]
"""

#: a problem type, nothing but its file: binary classification through one logit and a logistic loss
PROBLEM_FILE = '''
from typing import Any
import numpy as np
import torch
import torch.nn.functional as F
from harness.problems import register_problem
from harness.problems.classification import Classification


@register_problem("logistic")
class Logistic(Classification):
    """Two classes from one logit: P(label 1) = sigmoid(logit); logits (B, 1), labels (B,). transformers has no
    such loss: the loop backpropagates this one and gives the model no labels."""

    default_metrics = ("accuracy",)
    model_loss = False

    def config_kwargs(self, num_labels: int) -> dict[str, Any]:
        return {"num_labels": 1, "problem_type": "regression"}

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.squeeze(-1).float(), batch["labels"].float())

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits.squeeze(-1) > 0).long()
'''


def glue_like_folder(root: Path) -> None:
    """A GLUE-layout folder ``root/Polarity`` with train.tsv and dev.tsv."""
    rng = np.random.default_rng(0)
    words = {"neg": ["bad", "awful", "dull"], "pos": ["good", "great", "fine"]}
    (root / "Polarity").mkdir(parents=True)
    for split, n in (("train", 48), ("dev", 16)):
        rows = []
        for _ in range(n):
            lab = str(rng.choice(["neg", "pos"]))
            rows.append(f"a {rng.choice(words[lab])} film\t{lab}")
        (root / "Polarity" / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")


def test_a_glue_like_task_is_one_yaml(tmp_path: Path, one_thread: Any) -> None:
    conf = tmp_path / "conf" / "task"
    conf.mkdir(parents=True)
    (conf / "polarity.yaml").write_text(TASK_YAML)
    glue_like_folder(tmp_path / "glue")
    cfg = compose_cfg([*TINY, "task=polarity", f"task.glue_dir={tmp_path / 'glue'}",
                       f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "snapshot=none"])
    s = run(cfg, tmp_path / "run")
    assert s["task"] == "polarity" and s["problem"] == "classification" and s["main_metric"] == "accuracy"
    assert {"eval/accuracy", "eval/f1"} <= set(s)
    dev_labels = [ln.split("\t")[1] for ln in (tmp_path / "glue/Polarity/dev.tsv").read_text().splitlines()[1:]]
    majority = max(dev_labels.count("neg"), dev_labels.count("pos")) / len(dev_labels)
    assert s["chance"] == pytest.approx(majority)


@pytest.fixture
def logistic(tmp_path: Path) -> Iterator[str]:
    """The problem type of PROBLEM_FILE, registered from its own file (a module outside harness/problems/)."""
    path = tmp_path / "logistic_problem.py"
    path.write_text(PROBLEM_FILE)
    spec = importlib.util.spec_from_file_location("logistic_problem", path)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    yield "logistic"
    unregister_problem("logistic")


def test_a_problem_type_is_one_file(logistic: str, tmp_path: Path, one_thread: Any) -> None:
    assert logistic in PROBLEMS
    data = tmp_path / "data"
    glue_like_folder(data)
    for split in ("train", "dev"):  # the same rows as a user CSV task, labels 0/1
        lines = (data / "Polarity" / f"{split}.tsv").read_text().splitlines()[1:]
        rows = [f"{t},{int(lab == 'pos')}" for t, lab in (ln.split("\t") for ln in lines)]
        (data / f"{split}.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    cfg = compose_cfg([*TINY, "task=custom", f"task.train_file={data / 'train.csv'}",
                       f"task.dev_file={data / 'dev.csv'}", f"task.problem={logistic}", "snapshot=none",
                       "method.lr=5e-3", "train.max_steps=12", "train.eval_every=6"])
    s = run(cfg, tmp_path / "run")
    assert s["problem"] == "logistic" and 0.0 <= s["eval/accuracy"] <= 1.0
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert losses and all(np.isfinite(losses)) and losses[0] == pytest.approx(np.log(2), abs=0.1)  # a fresh logit ≈ 0


def test_the_problem_types_own_loss_is_backpropagated(logistic: str) -> None:
    """model_loss = False: the model sees no labels, the loss is the problem's (BCE, computed here by hand)."""
    import torch

    from harness.loop import forward_loss

    seen: dict[str, Any] = {}

    def model(**inputs: Any) -> Any:
        seen.update(inputs)
        return type("Out", (), {"logits": inputs["input_ids"].float().mean(1, keepdim=True).requires_grad_()})()

    batch = {"input_ids": torch.tensor([[1, 3], [0, -2]]), "labels": torch.tensor([1, 0])}
    _, loss, tl = forward_loss(model, get_problem(logistic), batch, lambda: torch.autocast("cpu", enabled=False))
    z, y = np.array([2.0, -1.0]), np.array([1.0, 0.0])
    expected = np.mean(np.log1p(np.exp(-z)) * y + np.log1p(np.exp(z)) * (1 - y))
    assert "labels" not in seen and loss.requires_grad and float(loss.detach()) == pytest.approx(expected)
    assert float(tl) == float(loss) and not tl.requires_grad


def test_adalora_is_refused_for_a_problem_type_that_computes_its_own_loss(logistic: str, tmp_path: Path) -> None:
    from harness.run import plan

    (tmp_path / "t.csv").write_text("text,label\na,0\nb,1\n")
    cfg = compose_cfg([*TINY, "task=custom", f"task.train_file={tmp_path / 't.csv'}",
                       f"task.dev_file={tmp_path / 't.csv'}", f"task.problem={logistic}", "method=adalora",
                       "method.deltaT=1"])
    with pytest.raises(ConfigError, match="method=adalora: adds its terms to the model's own loss"):
        plan(cfg)


def test_an_unknown_problem_type_names_the_key_and_close_names() -> None:
    with pytest.raises(ConfigError, match=r"task.problem: unknown problem type 'clasification' \(did you mean "
                                          r"classification\?\)"):
        get_problem("clasification")
