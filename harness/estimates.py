"""Measured step times, as data, and the time estimates ``--dry-run`` makes from them (docs/cli.md).

Each :class:`StepTime` is one measurement: where it was made (model, task, method, micro-batch, device), the
seconds per optimizer step it gave, what those seconds include, and the document that reports it (with the
figure as printed there, so a test can find it). A job gets an estimate only from a measurement of its own
model, task, method, batch size and device kind; anything else has no estimate. Gradient accumulation scales
the time per step (each micro-batch costs a measured step). These are estimates: another machine, a loaded
machine, other sequence lengths or another eval schedule change the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class StepTime:
    """Seconds per optimizer step of one measured configuration (``device``: ``cpu`` or a GPU model name as
    ``torch.cuda.get_device_name`` reports it in part, e.g. ``H200``)."""

    model: str
    task: str
    method: str
    batch_size: int
    device: str
    seconds: float
    includes: str  # what the seconds cover (whole run's wall / the training loop only)
    source: str  # the document reporting the measurement, relative to the repository root
    quoted: str  # the figure as that document prints it

    def label(self) -> str:
        """``MiniLM lora on SST-2, batch 32, CPU: 0.60 s/step (whole run's wall …; docs/…)``."""
        per = f"{self.seconds:.2f} s/step" if self.seconds >= 0.1 else f"{self.seconds * 1000:.1f} ms/step"
        return (f"{self.model} {self.method} on {self.task}, batch {self.batch_size}, {self.device}: {per} measured "
                f"({self.includes}; {self.source}: {self.quoted})")


_CPU = ("whole run's wall per step of the default sweep's 300-step runs on 2 idle CPU cores, loading and the "
        "final eval included")
_CPU_SRC = "docs/results/default_sweep/cpu_sweep_summary.md"
_H200 = "training loop of a 400-step run with the defaults, capture included, eval and start-up excluded"
_H200_SRC = "benchmarks/results/defaults_h200/README.md"

#: every measurement the estimates come from (seconds per optimizer step, grad_accum 1)
STEP_TIMES: tuple[StepTime, ...] = (
    StepTime("minilm", "sst2", "full", 32, "cpu", 179 / 300, _CPU, _CPU_SRC, "2m59s"),
    StepTime("minilm", "sst2", "lora", 32, "cpu", 177 / 300, _CPU, _CPU_SRC, "2m57s"),
    StepTime("minilm", "sst2", "dora", 32, "cpu", 296 / 300, _CPU, _CPU_SRC, "4m56s"),
    StepTime("minilm", "sst2", "adalora", 32, "cpu", 173 / 300, _CPU, _CPU_SRC, "2m53s"),
    StepTime("minilm", "sst2", "full", 32, "H200", 1 / 161.5, _H200, _H200_SRC, "161.5"),
    StepTime("minilm", "sst2", "lora", 32, "H200", 1 / 51.9, _H200, _H200_SRC, "51.9"),
    StepTime("minilm", "sst2", "dora", 32, "H200", 1 / 58.6, _H200, _H200_SRC, "58.6"),
    StepTime("minilm", "sst2", "adalora", 32, "H200", 1 / 119.0, _H200, _H200_SRC, "119.0"),
)


def device_kind(device: str) -> Optional[str]:
    """``cpu``, the CUDA device's name (``train.device`` cuda, cuda:N, or auto with CUDA available), or None
    (mps, or a CUDA device this torch cannot see)."""
    import torch

    name = device.lower()
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return "cpu"
    if name == "auto" or name.startswith("cuda"):
        if not torch.cuda.is_available():
            return None
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        return torch.cuda.get_device_name(index) if index < torch.cuda.device_count() else None
    return None


def lookup(model: str, task: str, method: str, batch_size: int, device: Optional[str]) -> Optional[StepTime]:
    """The measurement of this configuration on this kind of device, or None (no estimate)."""
    if device is None:
        return None
    for m in STEP_TIMES:
        on_device = device == "cpu" if m.device == "cpu" else m.device.lower() in device.lower()
        if (m.model, m.task, m.method, m.batch_size) == (model, task, method, batch_size) and on_device:
            return m
    return None


def duration(seconds: float) -> str:
    """``45s``, ``3m00s``, ``1h05m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
