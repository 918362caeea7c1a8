"""``python -m benchmarks.bench`` runs every method in both loops and reports what it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench import main


@pytest.mark.parametrize("plain", [False, True])
def test_bench_reports_every_method(plain: bool, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--model", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--batch", "4", "--seq", "16",
            "--out", str(out), *(["--plain"] if plain else [])]
    assert main(args) == 0
    rep = json.loads(out.read_text())
    assert [r["method"] for r in rep["rows"]] == ["full", "lora", "dora", "adalora"] and rep["failed"] == {}
    for r in rep["rows"]:
        assert r["ms_bare"] > 0 and r["ms_harness"] > 0
        assert r["ratio_bare_over_harness"] == pytest.approx(r["ms_bare"] / r["ms_harness"])
        assert r["tokens_per_s"] == pytest.approx(4 * 16 / (r["ms_harness"] / 1e3))
    assert rep["args"]["r"] == 16 and rep["args"]["plain"] is plain
    trainable = {r["method"]: r["trainable_params"] for r in rep["rows"]}
    assert trainable["lora"] < trainable["dora"] < trainable["adalora"] < trainable["full"]


def test_bench_refuses_an_unknown_method() -> None:
    with pytest.raises(SystemExit) as e:
        main(["--model", "tiny", "--device", "cpu", "--methods", "lora,qlora"])
    assert e.value.code == 2


def test_bench_profile_writes_an_op_table_per_method(tmp_path: Path) -> None:
    prof = tmp_path / "prof"
    args = ["--model", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--batch", "4", "--seq", "16",
            "--methods", "lora,adalora", "--profile", str(prof)]
    assert main(args) == 0
    assert sorted(p.name for p in prof.iterdir()) == ["tiny-adalora.txt", "tiny-lora.txt"]
    text = (prof / "tiny-adalora.txt").read_text()
    assert text.startswith("# tiny-adalora: 3 steps profiled; host syncs") and "aten::addmm" in text


def test_bench_keep_base_output_reaches_the_dora_config() -> None:
    from benchmarks.bench import method_config

    assert method_config("dora", 8, dropout=0.0, fused=True, keep_base=True).keep_base_output is True
    assert method_config("dora", 8, dropout=0.0, fused=False, keep_base=True).keep_base_output is False
    assert not hasattr(method_config("lora", 8, dropout=0.0, fused=True, keep_base=True), "keep_base_output")
    assert method_config("dora", 8, dropout=0.0, fused=True, keep_base=["Wf2"]).keep_base_output == ["Wf2"]


def test_bench_keep_base_output_by_matrix_type(tmp_path: Path) -> None:
    prof = tmp_path / "prof"
    assert main(["--model", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "1", "--batch", "2", "--seq", "8",
                 "--methods", "dora", "--keep-base-output", "Wf2,Wq", "--profile", str(prof)]) == 0
    assert [p.name for p in prof.iterdir()] == ["tiny-dora-keep_Wf2-Wq.txt"]


def test_bench_writes_each_method_as_it_finishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run cut after its first method (a time limit: here an interrupt) leaves that method's row on disk."""
    import benchmarks.bench as bench

    real = bench.bench_one

    def cut_at_dora(model_key: str, method: str, **kw: object) -> bench.Row:
        if method == "dora":
            raise KeyboardInterrupt
        return real(model_key, method, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(bench, "bench_one", cut_at_dora)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        main(["--model", "tiny", "--device", "cpu", "--steps", "1", "--warmup", "1", "--batch", "2", "--seq", "8",
              "--methods", "lora,dora", "--out", str(out)])
    assert [r["method"] for r in json.loads(out.read_text())["rows"]] == ["lora"]
