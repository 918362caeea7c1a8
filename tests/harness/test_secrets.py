"""Nothing leaks: API keys and tokens from the environment never reach run folders, logs or exported reports,
and checkpoints load without pickle (safetensors + JSON; any torch.load uses weights_only=True)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from harness.__main__ import main
from harness.redact import RedactingFilter, redact, redact_obj
from harness.tasks import TrainBatches
from tests.conftest import ROOT, TINY

FAKE = {
    "WANDB_API_KEY": "wandbkey0123456789abcdef0123456789abcdef",
    "HF_TOKEN": "hf_FakeTokenForTheLeakTest0123456789",
    "MY_SERVICE_SECRET": "s3cr3t-value-for-the-leak-test",
}


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in FAKE.items():
        monkeypatch.setenv(k, v)
    return FAKE


def leaks(root: Path) -> list[str]:
    """Files under ``root`` holding any fake secret (binary files included)."""
    found = []
    for f in root.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            found += [f"{f}: {k}" for k, v in FAKE.items() if v.encode() in data]
    return found


def test_redact_masks_secret_values(secrets: dict[str, str]) -> None:
    text = f"token={secrets['HF_TOKEN']} key {secrets['WANDB_API_KEY']}"
    assert redact(text) == "token=*** key ***"
    assert redact_obj({"a": [secrets["MY_SERVICE_SECRET"]], secrets["HF_TOKEN"]: 1}) == {"a": ["***"], "***": 1}
    rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed with %s", (secrets["HF_TOKEN"],), None)
    assert RedactingFilter().filter(rec) and rec.getMessage() == "failed with ***"


def test_no_secret_in_run_folders_logs_or_reports(secrets: dict[str, str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    # a good run with an offline W&B run in its folder, and Hydra's log file
    ok = tmp_path / "sweep" / "ok"
    assert main([*TINY, "method=lora", "tracking=offline", "tracking.project=leaktest", f"hydra.run.dir={ok}"]) == 0
    assert list((ok / "wandb").glob("offline-run-*")) and (ok / "run.json").is_file()
    # a failing run whose error message carries a secret (e.g. an URL with a token in an exception)
    orig = TrainBatches.__next__

    def boom(self: TrainBatches) -> np.ndarray:
        if self.offset >= 16:
            raise RuntimeError(f"download failed: https://user:{secrets['HF_TOKEN']}@example.org/x")
        return orig(self)

    monkeypatch.setattr(TrainBatches, "__next__", boom)
    bad = tmp_path / "sweep" / "bad"
    assert main([*TINY, "method=dora", "tracking=none", "train.checkpoint_every=1", f"hydra.run.dir={bad}"]) == 1
    monkeypatch.setattr(TrainBatches, "__next__", orig)
    assert "download failed" in (bad / "error.txt").read_text() and "***" in (bad / "run.json").read_text()
    out = capsys.readouterr()
    assert not any(v in out.out + out.err for v in FAKE.values())

    # exported reports: the HTML report, a table, PEFT result files
    from analysis.__main__ import main as analysis_main

    assert analysis_main(["report", str(tmp_path / "sweep"), "-o", str(tmp_path / "report"), "--include-unfinished"]) == 0
    assert analysis_main(["table", str(tmp_path / "sweep"), "-o", str(tmp_path / "table.md"), "--wandb", "off"]) == 0
    assert analysis_main(["export-peft", str(tmp_path / "sweep"), "-o", str(tmp_path / "peft")]) == 0
    assert (tmp_path / "report" / "index.html").is_file() or list((tmp_path / "report").glob("*.html"))
    out = capsys.readouterr()
    assert not any(v in out.out + out.err for v in FAKE.values())
    assert leaks(tmp_path) == []


def test_checkpoints_and_loads_never_unpickle() -> None:
    """Checkpoints are safetensors + JSON; every torch.load in the code passes weights_only=True."""
    src = [*ROOT.joinpath("harness").rglob("*.py"), *ROOT.joinpath("analysis").rglob("*.py")]
    calls = [(f, m.group(0)) for f in src for m in re.finditer(r"torch\.load\([^)]*\)", f.read_text())]
    assert all("weights_only=True" in c for _, c in calls), calls
    assert not [f for f in src if re.search(r"\bpickle\.loads?\(", f.read_text())]
    from harness import checkpoint

    text = Path(checkpoint.__file__).read_text()
    assert "torch.save" not in text and "torch.load" not in text
