"""Pack a sweep's jobs onto the GPUs: N concurrent jobs per GPU, each pinned with CUDA_VISIBLE_DEVICES.

Registered as ``hydra/launcher=packed`` (the default in conf/config.yaml). A small model's training step is
host-bound (MiniLM: ~55 ms of Python and kernel launches per step on an H200, the GPU mostly idle), so one
job at a time wastes the device; several jobs on one GPU each keep nearly their solo speed.

* No GPU (or ``gpus: []``), or one slot in all: jobs run one after another in this process, exactly as
  Hydra's basic launcher runs them.
* Otherwise joblib's loky processes (the engine of hydra-joblib-launcher) run ``jobs_per_gpu × #GPUs``
  jobs at a time. Each worker process claims one slot token (a file, taken by an atomic rename) on its
  first job and pins itself to that slot's GPU with ``CUDA_VISIBLE_DEVICES`` for its life (CUDA reads the
  variable once), so every GPU carries exactly ``jobs_per_gpu`` workers. The job itself is Hydra's ``run_job`` as in the joblib launcher: its records
  are those of a job run alone.

Longest first: packed jobs start in decreasing order of expected cost (``train.max_steps`` × the method's
``step_cost``, read from each job's overrides), so the slowest jobs do not start last and run alone at the
end of the sweep; job numbers, folders and the returned order are those of the sweep.

``jobs_per_gpu: auto`` = min(free memory of the emptiest GPU / ``job_memory_gb``, CPU cores / (#GPUs ·
``cpus_per_job``), ``max_jobs_per_gpu``); a job that needs more than a quarter of a GPU (a large model)
gets the GPU alone. An explicit value must lie in 1 .. the machine's limit (the same formula without the
quarter rule), else ConfigError before any job starts.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError

log = logging.getLogger(__name__)

#: A job asking for more than this share of a GPU's free memory runs alone on it.
SMALL_JOB_SHARE = 0.25
_PIN_ENV = "HARNESS_PINNED_GPU"


@dataclass
class Slots:
    """How a sweep is laid out: the GPUs used and the concurrent jobs on each (0 GPUs: sequential)."""

    gpus: list[int]
    jobs_per_gpu: int
    reason: str

    @property
    def parallel(self) -> int:
        """Jobs running at once."""
        return max(1, len(self.gpus) * self.jobs_per_gpu)


def free_gpu_memory_gb() -> dict[int, float]:
    """Free memory (GiB) of each visible GPU, read with nvidia-smi (no CUDA context in this process);
    torch's totals when nvidia-smi is missing; empty without GPUs."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=index,memory.free", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
            free = {int(i): float(m) / 1024 for i, m in (line.split(",") for line in out.strip().splitlines())}
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible is not None:
                ids = [int(x) for x in visible.split(",") if x.strip().isdigit()]
                free = {new: free[old] for new, old in enumerate(ids) if old in free}
            return free
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            log.warning("nvidia-smi failed (%s); using torch's device totals", e)
    import torch

    if not torch.cuda.is_available():
        return {}
    return {i: torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(torch.cuda.device_count())}


def plan_slots(*, jobs_per_gpu: Union[int, str], gpus: Union[Sequence[int], str], job_memory_gb: float,
               cpus_per_job: float, max_jobs_per_gpu: int, n_jobs: int,
               free_gb: Optional[dict[int, float]] = None, cpu_count: Optional[int] = None) -> Slots:
    """The layout for ``n_jobs`` jobs; ConfigError naming the key for impossible settings."""
    free = free_gpu_memory_gb() if free_gb is None else free_gb
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    if gpus == "auto":
        ids = sorted(free)
    elif isinstance(gpus, str):
        raise ConfigError(f"hydra.launcher.gpus: 'auto' or a list of GPU indices, got {gpus!r}")
    else:
        ids = [int(g) for g in gpus]
        missing = [g for g in ids if free and g not in free]
        if missing:
            raise ConfigError(f"hydra.launcher.gpus: no GPU {missing} on this machine (it has {sorted(free)})")
    for key, v in (("job_memory_gb", job_memory_gb), ("cpus_per_job", cpus_per_job)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"hydra.launcher.{key}: must be a finite number > 0, got {v!r}")
    if not ids:
        return Slots([], 1, "no GPU: one job at a time in this process")
    emptiest = min(free.get(g, 0.0) for g in ids) if free else 0.0
    by_memory = int(emptiest // job_memory_gb) if free else max_jobs_per_gpu
    by_cpu = max(1, int(cores // (len(ids) * cpus_per_job)))
    limit = max(1, min(by_memory, by_cpu))
    if jobs_per_gpu == "auto":
        if free and job_memory_gb > SMALL_JOB_SHARE * emptiest:
            n, why = 1, f"a job needs {job_memory_gb:g} GiB, more than a quarter of the {emptiest:.0f} GiB free: one per GPU"
        else:
            n = max(1, min(limit, max_jobs_per_gpu))
            why = (f"auto: min({by_memory} by memory ({emptiest:.0f} GiB free / {job_memory_gb:g} GiB a job), "
                   f"{by_cpu} by CPU ({cores} cores / {len(ids)} GPU(s) / {cpus_per_job:g} per job), {max_jobs_per_gpu} cap)")
    else:
        if isinstance(jobs_per_gpu, bool) or not isinstance(jobs_per_gpu, int):
            raise ConfigError(f"hydra.launcher.jobs_per_gpu: 'auto' or an integer, got {jobs_per_gpu!r}")
        if not 1 <= jobs_per_gpu <= limit:
            memory = f"{by_memory} by memory" if free else "no memory reading"
            raise ConfigError(f"hydra.launcher.jobs_per_gpu: must be in 1..{limit} on this machine "
                              f"({memory}, {by_cpu} by CPU cores), got {jobs_per_gpu}; lower it or "
                              "set hydra.launcher.jobs_per_gpu=auto")
        n, why = jobs_per_gpu, "set by hydra.launcher.jobs_per_gpu"
    n = min(n, max(1, math.ceil(n_jobs / len(ids))))  # never more workers than jobs
    return Slots(ids, n, why)


def job_costs(job_overrides: Sequence[Sequence[str]], config: DictConfig) -> list[float]:
    """Expected relative cost of each job: ``train.max_steps`` × the method's ``step_cost`` (the overrides win
    over the sweep's config; anything unreadable counts as 1, which only affects the start order)."""
    from harness.methods import METHODS

    def base(key: str) -> Any:
        try:
            return OmegaConf.select(config, key, throw_on_missing=False)
        except Exception:  # noqa: BLE001 - an interpolation that needs the job's context: use the default
            return None

    method0, steps0 = base("method.name"), base("train.max_steps")
    costs = []
    for ov in job_overrides:
        kv = dict(o.lstrip("+~").split("=", 1) for o in ov if "=" in o)
        method = METHODS.get(str(kv.get("method", method0)))
        try:
            steps = float(kv.get("train.max_steps", steps0) or 1)
        except ValueError:
            steps = 1.0
        costs.append(steps * (method.step_cost if method is not None else 1.0))
    return costs


def make_tokens(folder: Path, slots: Slots) -> None:
    """One token file per worker slot (``<gpu>_<k>``) in ``folder``; a worker claims one by renaming it."""
    folder.mkdir(parents=True, exist_ok=True)
    for g in slots.gpus:
        for k in range(slots.jobs_per_gpu):
            (folder / f"{g}_{k}").touch()


def claim_token(folder: Path) -> Optional[int]:
    """Take a free token (an atomic rename: two workers never get the same one); its GPU, or None."""
    for token in sorted(p for p in folder.iterdir() if "." not in p.name):
        try:
            os.rename(token, token.with_name(f"{token.name}.{os.getpid()}"))
        except OSError:
            continue  # another worker took it first
        return int(token.name.split("_")[0])
    return None


def _pin(tokens: Path) -> None:
    """Pin this worker process to one GPU for its life (the first job it runs claims a token)."""
    if os.environ.get(_PIN_ENV, "").startswith(str(tokens)):
        return
    gpu = claim_token(tokens)
    if gpu is None:  # a replacement worker after the tokens ran out keeps the default device assignment
        log.warning("no free GPU slot for worker %d; it uses the default device assignment", os.getpid())
        os.environ[_PIN_ENV] = f"{tokens}:none"
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    os.environ[_PIN_ENV] = f"{tokens}:{gpu}"


def _execute(idx: int, overrides: Sequence[str], hydra_context: HydraContext, config: DictConfig,
             task_function: TaskFunction, singleton_state: dict[Any, Any], tokens: Path) -> JobReturn:
    """One job in a worker process: pin the worker to its GPU, then Hydra's run_job (joblib launcher's)."""
    from hydra_plugins.hydra_joblib_launcher._core import execute_job

    _pin(tokens)
    return execute_job(idx, overrides, hydra_context, config, task_function, singleton_state)


class PackedLauncher(Launcher):
    """Hydra launcher: ``jobs_per_gpu`` concurrent jobs on each GPU (see the module docstring)."""

    def __init__(self, jobs_per_gpu: Union[int, str] = "auto", gpus: Union[Sequence[int], str] = "auto",
                 job_memory_gb: float = 2.0, cpus_per_job: float = 1.0, max_jobs_per_gpu: int = 16) -> None:
        self.jobs_per_gpu = jobs_per_gpu
        self.gpus = gpus
        self.job_memory_gb = job_memory_gb
        self.cpus_per_job = cpus_per_job
        self.max_jobs_per_gpu = max_jobs_per_gpu
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self._plan(n_jobs=1_000_000)  # impossible settings stop the sweep before any folder is made

    def _plan(self, n_jobs: int) -> Slots:
        gpus = self.gpus if isinstance(self.gpus, str) else list(self.gpus)
        return plan_slots(jobs_per_gpu=self.jobs_per_gpu, gpus=gpus, job_memory_gb=self.job_memory_gb,
                          cpus_per_job=self.cpus_per_job, max_jobs_per_gpu=self.max_jobs_per_gpu, n_jobs=n_jobs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run the jobs: sequentially here, or packed onto the GPUs in worker processes."""
        from harness.hydra_compat import BasicLauncher

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        slots = self._plan(n_jobs=len(job_overrides))
        if slots.parallel == 1:
            log.info("launcher: %d job(s) one after another (%s)", len(job_overrides), slots.reason)
            basic = BasicLauncher()
            basic.setup(hydra_context=self.hydra_context, task_function=self.task_function, config=self.config)
            return basic.launch(job_overrides, initial_job_idx)
        from joblib import Parallel, delayed
        from joblib.externals.loky import get_reusable_executor

        log.info("launcher: %d job(s), %d at a time: %d per GPU on GPU(s) %s (%s)", len(job_overrides),
                 slots.parallel, slots.jobs_per_gpu, slots.gpus, slots.reason)
        tokens = Path(tempfile.mkdtemp(prefix="harness-gpu-slots-"))
        try:
            make_tokens(tokens, slots)
            get_reusable_executor(max_workers=slots.parallel).shutdown(wait=True)  # fresh, unpinned workers
            state = Singleton.get_state()
            costs = job_costs(job_overrides, self.config)
            order = sorted(range(len(job_overrides)), key=lambda i: -costs[i])  # stable: ties keep sweep order
            done = Parallel(n_jobs=slots.parallel, backend="loky")(
                delayed(_execute)(initial_job_idx + i, list(job_overrides[i]), self.hydra_context, self.config,
                                  self.task_function, state, tokens)
                for i in order)
        finally:
            shutil.rmtree(tokens, ignore_errors=True)
        runs: list[Optional[JobReturn]] = [None] * len(job_overrides)
        for i, r in zip(order, done):
            runs[i] = r
        return [r for r in runs if r is not None]
