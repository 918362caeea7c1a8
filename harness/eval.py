"""``python -m harness.eval FOLDER [--allow-failed] [--task-mismatch-ok] [--verbose] [task=<task>] [key=value ...]``:
score a saved adapter (or fully fine-tuned model) on a task's dev set and print its metrics.

FOLDER is a run folder or the folder its method saves into (``Method.save_dir``: ``adapter/``, or ``model/``
when the base model trains); the run's recorded config (run.json) gives the base model, the seed (tiny models
built from a config are re-created from it) and, unless ``task=`` is given, the task. Overrides:
``task=<option>`` (conf/task/), ``task.<key>=…``, ``model.max_length=…``, ``train.eval_batch_size=…``,
``train.device=…``. A task other than the one the run trained on is refused unless ``--task-mismatch-ok`` is
given (then one warning line says so), and it must have the label space the head was trained for (same number of
labels). A run whose record is not ``done`` (failed, crashed, running) is refused unless ``--allow-failed`` is
given. The log is quiet (no transformers load reports or bars) unless ``--verbose``. Bad input exits 2 with one
line naming the argument and the fix.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, HarnessError
from harness.record import DONE, RUN_FILE, BadRecord, has_run, read_run

log = logging.getLogger(__name__)

#: override prefixes ``python -m harness.eval`` accepts (the rest of the config is the run's)
EVAL_KEYS = ("task.", "model.max_length", "train.eval_batch_size", "train.device")
#: the flags of ``python -m harness.eval`` (each on its own, anywhere on the line)
FLAGS = ("--allow-failed", "--task-mismatch-ok", "--verbose")


def locate(folder: Path, *, allow_failed: bool = False) -> tuple[Path, Path, dict[str, Any]]:
    """(run folder, saved adapter/model folder, the run's recorded config) of a run folder or of its saved folder;
    ConfigError otherwise, and for a run whose record is not ``done`` unless ``allow_failed``. The saved folder is
    the one the run's method declares (:meth:`harness.methods.base.Method.save_dir`)."""
    from transformers.utils import CONFIG_NAME

    from harness.methods import get_method

    folder = Path(folder)
    run_dir = folder if has_run(folder) else folder.parent
    if not has_run(run_dir):
        raise ConfigError(f"{folder}: not a run folder nor a run's adapter/ or model/ folder (no {RUN_FILE}); pass a "
                          f"folder such as outputs/runs/<run> or outputs/runs/<run>/adapter")
    try:
        record = read_run(run_dir)
        config = record["config"]
        method = config["method"]["name"]
    except (OSError, BadRecord, KeyError) as e:
        raise ConfigError(f"{run_dir / RUN_FILE}: no readable config with method.name ({e}); the run's record is "
                          f"damaged") from None
    if record.get("status") != DONE and not allow_failed:
        why = f" ({record['error']})" if record.get("error") else ""
        raise ConfigError(f"{run_dir / RUN_FILE}: the run is {record.get('status')}{why}, so its saved weights may "
                          f"be partial or stale; pass --allow-failed to score them anyway")
    saved = run_dir / get_method(method).save_dir()
    if folder not in (run_dir, saved):
        raise ConfigError(f"{folder}: not where the run's method ({method}) saves; pass the run folder {run_dir} or "
                          f"{saved}")
    if not ((saved / "adapter_config.json").is_file() or (saved / CONFIG_NAME).is_file()):  # transformers' own
        raise ConfigError(f"{saved}: holds no saved adapter or model (adapter_config.json / config.json); was the run "
                          f"done with train.save_model=true and finished?")
    return run_dir, saved, config


def eval_config(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The run's recorded config ``cfg`` with ``overrides`` applied (``task=<option>`` swaps in the task config
    that ``python -m harness task=<option>`` composes: conf/task/<option>.yaml over its schema)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import harness.methods  # noqa: F401  (the methods' schemas, named by conf/method/*.yaml)
    from harness.options import CONF, groups

    conf = OmegaConf.create(cfg)
    for o in overrides:
        key, eq, value = o.partition("=")
        if not eq:
            raise ConfigError(f"'{o}': not an override; write key=value, e.g. task=rte or task.max_eval_samples=64")
        if key == "task":
            options = groups()["task"]
            if value not in options:
                raise ConfigError(f"task={value}: no such task; choose one of {', '.join(options)}")
            with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
                conf.task = compose(config_name="config", overrides=[f"task={value}"]).task
        elif key.startswith(EVAL_KEYS):
            conf.merge_with_dotlist([o])
        else:
            raise ConfigError(f"{key}: cannot be changed when evaluating a saved run (only task, task.*, "
                              f"model.max_length, train.eval_batch_size, train.device)")
    out = OmegaConf.to_container(conf, resolve=False)
    assert isinstance(out, dict)
    return out


def check_task(trained: str, asked: str, *, mismatch_ok: bool) -> None:
    """``task=<asked>`` for a run trained on ``trained``: ConfigError when they differ, unless ``mismatch_ok``
    (then one warning)."""
    if asked == trained:
        return
    what = f"task={asked}: the run was trained on {trained}, so this scores transfer to another task, not the run"
    if not mismatch_ok:
        raise ConfigError(f"{what}; pass --task-mismatch-ok to score it anyway, or drop task= to use {trained}")
    log.warning("%s (--task-mismatch-ok)", what)


def evaluate_saved(folder: Path, overrides: list[str], *, allow_failed: bool = False,
                   task_mismatch_ok: bool = False) -> dict[str, Any]:
    """Metrics of the saved adapter/model of ``folder`` on the (overridden) task's dev set, with the task, the
    main metric and the number of examples (``allow_failed``: :func:`locate`; ``task_mismatch_ok``:
    :func:`check_task`)."""
    import torch

    from harness.config import to_typed, validate
    from harness.loop import evaluate
    from harness.models import load_model, load_tokenizer, model_config
    from harness.problems import get_problem
    from harness.run import pick_device, seed_everything
    from harness.tasks import load_task, task_problem

    _, saved, config = locate(folder, allow_failed=allow_failed)
    recorded = to_typed(config)
    c = to_typed(eval_config(config, overrides))
    validate(c)
    check_task(recorded.task.name, c.task.name, mismatch_ok=task_mismatch_ok)
    problem = get_problem(task_problem(c.task))
    data = load_task(c.task, seed=c.seed, problem=problem)
    trained = load_task(recorded.task, seed=recorded.seed, problem=get_problem(task_problem(recorded.task))) \
        if recorded.task != c.task else data
    if (data.num_labels, data.problem) != (trained.num_labels, trained.problem):
        raise ConfigError(f"task={c.task.name}: {data.num_labels} label(s) ({data.problem}), but the head was "
                          f"trained on {recorded.task.name} with {trained.num_labels} ({trained.problem}); choose a "
                          f"task with the same labels")
    seed_everything(c.seed)
    tokenizer = load_tokenizer(c.model)
    conf = model_config(c.model, trained.num_labels, trained.problem)
    problem.configure(c.task, conf)
    dev = problem.encode(data.dev, tokenizer, c.model.max_length)
    if (saved / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(c.model, conf, problem.name), str(saved))
    else:
        model = problem.model_class().from_pretrained(str(saved))
    device = pick_device(c.train.device)
    model = model.to(device)
    bf16 = device.type == "cuda" and c.train.bf16
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    with torch.no_grad():
        metrics = evaluate(model, dev, batch_size=c.train.eval_batch_size, pad_id=tokenizer.pad_token_id,
                           device=device, problem=problem, metric_names=data.metrics, autocast=autocast).metrics
    return {"task": c.task.name, "main_metric": data.main_metric, "examples": len(dev), "saved": str(saved),
            **{f"eval/{k}": v for k, v in metrics.items()}}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input)."""
    from harness.redact import redact
    from harness.summaries import configure_output

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip())
        return 0
    flags = {f: f in argv for f in FLAGS}
    argv = [a for a in argv if a not in FLAGS]
    if not argv or "=" in argv[0]:
        print(f"error: FOLDER: missing; usage: python -m harness.eval FOLDER [{'] ['.join(FLAGS)}] [task=<task>] "
              "[key=value ...]", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    configure_output(flags["--verbose"])
    try:
        result = evaluate_saved(Path(argv[0]), argv[1:], allow_failed=flags["--allow-failed"],
                                task_mismatch_ok=flags["--task-mismatch-ok"])
    except HarnessError as e:
        print(redact(f"error: {e}"), file=sys.stderr)
        return 2
    main_key = f"eval/{result['main_metric']}"
    print(f"{result['task']}: {result['main_metric']} {result[main_key]:.4f} on {result['examples']} dev examples "
          f"({result['saved']})")
    for k, v in result.items():
        if k.startswith("eval/") and k != main_key:
            print(f"  {k[5:]} {v:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
