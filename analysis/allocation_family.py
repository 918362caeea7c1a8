"""AdaLoRA's two allocation claims (more rank to the FFN matrices, more to the top layers) over several
conditions at once: per condition (one task, budget, model, schedule) and over the tasks of one setting.

Two declared families, each Holm-adjusted on its own:

* ``per condition``: every (condition, claim) of the command, tested on the per-seed differences of that
  condition (``ffn_mean − attn_mean``, ``top_mean − bottom_mean`` of :func:`analysis.ranks.allocation_shares`),
  a one-sample t-test of 0, as :func:`analysis.ranks.verdict` does for one figure;
* ``over tasks``: per setting (every condition key but the task) with two or more tasks, the task means of
  those differences tested across tasks (a one-sample t-test over n = tasks: tasks as the unit, so the
  verdict speaks for tasks like these, not only for the seeds run).

Verdict words are those of :func:`analysis.stats.claim_family` (agrees / disagrees / inconclusive /
descriptive), from the Holm-adjusted p. The paper gives no number for either claim: no value answer.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd

from analysis import stats as S
from analysis.ranks import CONDITION_KEYS

#: claim name -> (the per-run columns whose difference it tests, what it says)
CLAIMS: dict[str, tuple[str, str, str]] = {
    "ffn": ("ffn_mean", "attn_mean", "FFN − attention mean rank"),
    "top": ("top_mean", "bottom_mean", "top − bottom third mean rank"),
}
COLUMNS = ["family", "condition", "setting", "claim", "what", "n", "unit", "estimate", "low", "high",
           "positive", "p", "p_holm", "verdict"]


def _setting(keys: dict[str, Any]) -> str:
    """The condition's keys but the task, as ``model=minilm target_r=8 …`` (what an over-tasks row pools)."""
    return " ".join(f"{k}={v}" for k, v in keys.items() if k != "task")


def _keys(sub: pd.DataFrame) -> dict[str, Any]:
    """The condition keys of one condition's rows (first value of each present key)."""
    out = {}
    for k in CONDITION_KEYS:
        if k in sub.columns and sub[k].notna().any():
            v = sub[k].dropna().iloc[0]
            out[k] = int(v) if isinstance(v, float) and v.is_integer() else v
    return out


def _row(family: str, condition: str, setting: str, claim: str, values: pd.Series, unit: str,
         alpha: float) -> tuple[dict[str, Any], S.Claim]:
    c = S.claim(values, +1.0, alpha=alpha)
    row = {"family": family, "condition": condition, "setting": setting, "claim": claim, "what": CLAIMS[claim][2],
           "n": c.n, "unit": unit, "estimate": c.estimate, "low": c.low, "high": c.high,
           "positive": int((values > 0).sum())}
    return row, c


def _adjusted(rows: list[dict[str, Any]], claims: list[S.Claim]) -> list[dict[str, Any]]:
    for row, c in zip(rows, S.claim_family(claims, [1.0] * len(claims))):
        row.update(p=c.p, p_holm=c.p_adj, verdict=c.sign)
    return rows


def family_table(conditions: Sequence[tuple[str, pd.DataFrame, pd.DataFrame]], *,
                 confidence: float = 0.95) -> pd.DataFrame:
    """One row per verdict (:data:`COLUMNS`) from ``(label, long rows, allocation_shares)`` per condition.

    ``estimate`` / ``low`` / ``high``: mean and Student-t interval of the differences (per seed, or per task
    for ``over tasks``); ``positive``: how many of them are above 0; ``p``: the t-test of 0; ``p_holm``: Holm
    within the row's family."""
    alpha = 1 - S.check_confidence(confidence)
    per_rows: list[dict[str, Any]] = []
    per_claims: list[S.Claim] = []
    task_means: dict[tuple[str, str], dict[str, float]] = {}
    for label, sub, shares in conditions:
        keys = _keys(sub)
        setting = _setting(keys)
        for claim, (hi, lo, _) in CLAIMS.items():
            if hi not in shares or lo not in shares or shares[[hi, lo]].isna().any().any():
                continue
            d = (shares[hi] - shares[lo]).reset_index(drop=True)
            row, c = _row("per condition", label, setting, claim, d, "seeds", alpha)
            per_rows.append(row)
            per_claims.append(c)
            task_means.setdefault((setting, claim), {})[str(keys.get("task", label))] = float(d.mean())
    rows = _adjusted(per_rows, per_claims)
    over_rows: list[dict[str, Any]] = []
    over_claims: list[S.Claim] = []
    for (setting, claim), means in sorted(task_means.items()):
        if len(means) < 2:
            continue
        row, c = _row("over tasks", "+".join(sorted(means)), setting, claim, pd.Series(means), "tasks", alpha)
        over_rows.append(row)
        over_claims.append(c)
    rows += _adjusted(over_rows, over_claims)
    return pd.DataFrame(rows, columns=COLUMNS)


def render_markdown(table: pd.DataFrame, *, confidence: float = 0.95) -> str:
    """The family table as markdown, with the caption that declares its families."""
    k_per = int((table["family"] == "per condition").sum())
    k_over = int((table["family"] == "over tasks").sum())
    pct = f"{confidence * 100:g}%"
    lines = [f"AdaLoRA's allocation claims (more rank to FFN, more to the top third of the layers). Two Holm "
             f"families: the {k_per} per-condition verdicts (per-seed differences, {pct} Student-t interval, "
             f"t-test of 0) and the {k_over} over-tasks verdicts (the task means tested across tasks, n = tasks).",
             "", "| family | condition | setting | claim | n | estimate [interval] | > 0 | p | Holm p | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        iv = f"{r.estimate:+.2f}" + (f" [{r.low:+.2f}, {r.high:+.2f}]" if math.isfinite(r.low) else "")
        p = "–" if not math.isfinite(r.p) else f"{r.p:.3g}"
        ph = "–" if not math.isfinite(r.p_holm) else f"{r.p_holm:.3g}"
        lines.append(f"| {r.family} | {r.condition} | {r.setting} | {r.what} | {r.n} {r.unit} | {iv} | "
                     f"{r.positive}/{r.n} | {p} | {ph} | {r.verdict} |")
    return "\n".join(lines) + "\n"
