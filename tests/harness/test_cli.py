"""The command line: presets as bare words, --help, and bad input → exit 2 with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.__main__ import main, map_bare_words
from harness.errors import ConfigError
from tests.conftest import GLUE, ROOT

TINY = ["model=tiny_bert", "tracking=none", "train.max_steps=4", "task.max_train_samples=32",
        "task.max_eval_samples=16", "train.progress=false"]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "GLUE_DIR": str(GLUE), **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=e,
                          cwd=cwd, timeout=300)


def in_process(capfd: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m harness ARGS`` run in this process (``harness.__main__.main``, as the console script calls it):
    the exit status and all that reached stdout and stderr, file descriptors included. A fresh interpreter adds
    only its imports (seconds each); test_bad_inputs.py keeps real processes where the terminal is the point."""
    capfd.readouterr()
    rc = main(list(args))
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["harness", *args], rc, out, err)


def test_bare_word_selects_preset() -> None:
    assert map_bare_words(["-m", "sweep", "seed=1"]) == ["-m", "experiment=sweep", "seed=1"]
    assert map_bare_words(["--config-name", "config", "seed=1"]) == ["--config-name", "config", "seed=1"]
    assert map_bare_words(["--cfg", "job", "sweep"]) == ["--cfg", "job", "experiment=sweep"]
    with pytest.raises(ConfigError, match="'swep': not a preset"):
        map_bare_words(["-m", "swep"])


def test_help_lists_groups_and_presets() -> None:
    r = cli("--help")
    assert r.returncode == 0
    for word in ("method", "adalora", "tiny_llama", "submitit_slurm", "joblib", "sweep", "tracking"):
        assert word in r.stdout


BAD = [
    (["method=lorax"], "method"),
    (["method.r=0"], "method.r: must be a positive integer"),
    (["method=adalora", "method.tinit=3", "method.tfinal=2"], "does not fit"),
    (["method=adalora", "method.tinit=0", "method.tfinal=3"], "method.tfinal: AdaLoRA's last masking (step T - tfinal = 1)"),
    (["method=adalora", "budget=8", "method.init_r=4"], "method.target_r"),
    (["task.glue_dir=/nonexistent/glue"], "/nonexistent/glue: GLUE folder not found"),
    (["method.targets=[q_proj]"], "method.targets: 'q_proj'"),
    (["train.lr=-1"], "train.lr"),
    (["nosuchpreset"], "not a preset"),
    (["train.batch_size=abc"], "train.batch_size"),
    (["model=tiny_bert", "modle.name=x"], "modle"),
    (["task.validation_fraction=1.5"], "task.validation_fraction: must be in [0, 1), got 1.5"),
    (["train.lr_scale=-2"], "train.lr_scale: must be a finite number > 0"),
    (["method=adalora", "method.match=size"], "method.match: one of rank, params"),
]


@pytest.mark.parametrize(("args", "expect"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(args: list[str], expect: str, tmp_path: Path,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    r = in_process(capfd, *TINY, *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and expect in lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "run.json").exists()  # rejected before any run started


def test_malformed_tsv_exits_2(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    (glue / "train.tsv").write_text("sentence\tlabel\nok\t1\nbroken\t0\textra\n")
    (glue / "dev.tsv").write_text("sentence\tlabel\nok\t1\n")
    r = in_process(capfd, *TINY, f"task.glue_dir={tmp_path / 'glue'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 2 and "malformed TSV" in r.stderr and "Traceback" not in r.stderr


def test_missing_data_without_glue_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GLUE_DIR")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    r = in_process(capfd, *TINY, f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2 and "GLUE_DIR" in r.stderr and "Traceback" not in r.stderr


def test_console_scripts_point_at_the_clis(capsys: pytest.CaptureFixture[str]) -> None:
    """``harness`` and ``lora-analysis`` (pyproject.toml) call the CLIs' main functions (what pip's wrapper runs)."""
    import importlib
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"harness", "lora-analysis"}
    funcs = {}
    for name, target in scripts.items():
        module, func = target.split(":")
        funcs[name] = getattr(importlib.import_module(module), func)
    assert funcs["harness"](["--help"]) == 0
    assert "config groups" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        funcs["lora-analysis"](["--help"])
    assert e.value.code == 0 and "table" in capsys.readouterr().out


def test_help_of_a_group_lists_keys_types_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.__main__ import help_text, main

    assert main(["--help", "method=adalora"]) == 0
    out = capsys.readouterr().out
    target = next(ln for ln in out.splitlines() if ln.strip().startswith("method.target_r "))
    assert " int " in target and "${adalora_r:target" in target
    assert main(["--help", "train"]) == 0  # the default option
    out = capsys.readouterr().out
    assert "train=default" in out
    assert any(ln.split()[:2] == ["train.max_steps", "Optional[int]"] for ln in out.splitlines())
    assert "experiment/adalora_glue" not in help_text()  # a preset's own configs are no group


@pytest.mark.parametrize(("topic", "expect"), [("nosuch", "'nosuch' is not a config group"),
                                                ("method=lorax", "no option 'lorax' in method")])
def test_help_of_a_bad_group_exits_2(topic: str, expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.__main__ import main

    assert main(["--help", topic]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: --help") and expect in err[0]
