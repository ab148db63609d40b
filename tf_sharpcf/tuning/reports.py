"""The search's reports: trials.csv / trials.md, one row per trial, and the timing summary.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional


from tf_sharpcf.atomic import atomic_write_text
from tf_sharpcf.tuning.settings import OBJECTIVE, SECONDARY, SearchSettings


def describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{n}={_fmt(v)}" for n, v in values.items())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ---------------------------------------------------------------------------
# Reports


def timings(rows: List[Dict[str, Any]]) -> Dict[str, float]:
    """Search seconds and what the shared warm start saved.

    A trial that reused a warm-up would otherwise have trained it: it saved
    that warm-up's measured seconds (its epochs and its XLA compile).
    """
    done = [r for r in rows if "seconds" in r]
    spent = sum(r["seconds"] for r in done)
    reused = [r for r in done if r["warm_start"]["reused"]]
    avoided = sum(r["warm_start"]["seconds"] for r in reused)
    return {
        "trials_seconds": spent,
        "warmups_trained": sum(1 for r in done if r["warm_start"]["key"] and not r["warm_start"]["reused"]),
        "warmup_seconds_trained": sum(r["warm_start"]["trained_seconds"] for r in done),
        "trials_reusing_a_warmup": len(reused),
        "warmup_epochs_avoided": sum(r["warm_start"]["epochs"] for r in reused),
        "warmup_seconds_avoided": avoided,
        "seconds_without_shared_warm_start": spent + avoided,
    }


# stopped_epoch: blank for a trial that trained all its epochs (no early stop, `--patience`)
TABLE_METRICS = (OBJECTIVE, SECONDARY, "best_epoch", "epochs", "trained_epochs", "stopped_epoch", "seconds")


def write_tables(project: Path, settings: SearchSettings, rows: List[Dict[str, Any]],
                 best_id: Optional[str]) -> List[Dict[str, Any]]:
    """trials.csv and trials.md in `project`, one row per trial summary
    (`Tuner.trial_summaries`), the best trial (`best_id`, None if none has
    finished) in bold; -> the rows."""
    project = Path(project)
    names = list(settings.space)
    columns = ["trial", "status", *names, *TABLE_METRICS, "warm_start"]

    def cells(r):
        warm = r.get("warm_start") or {}
        status = "reused" if warm.get("reused") else ("trained" if warm.get("key") else "")
        return {"trial": r["trial"], "status": r["status"],
                **{n: r["hyperparameters"].get(n, "") for n in names},
                **{m: r.get(m, "") for m in TABLE_METRICS}, "warm_start": status}

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in cells(r).items()})
    atomic_write_text(project / "trials.csv", buf.getvalue())

    s = settings
    t = s.base.train
    parts = [s.method, *([f"{t.loss} loss"] if t.loss != "bpr" else []),
             *([f"{t.sampler} negatives"] if t.sampler != "uniform" else []),
             *(["cosine"] if s.base.model.similarity != "dot" else [])]
    lines = [f"# {', '.join(parts)} on {s.base.data.dataset}: {s.algorithm} search, {len(rows)} trial(s)", "",
             f"Objective: {OBJECTIVE} on a validation split ({s.val_fraction:g} of each user's training "
             f"interactions, seed {s.base.train.seed}); the test set is not used.", "",
             "Search space: " + "; ".join(f"{n} {sp.describe()}" for n, sp in s.space.items()) + ".",
             f"Epochs: {s.base.train.epochs} (the first {s.warm_start_epochs} shared as a warm start)"
             if s.warm_start_epochs else f"Epochs: {s.base.train.epochs}", ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for r in rows:
        c = cells(r)
        text = [_md(c[k], k) for k in columns]
        if r["trial"] == best_id:
            text = [f"**{t}**" if t else t for t in text]
        lines.append("| " + " | ".join(text) + " |")
    t = timings(rows)
    lines += ["", f"Trials: {t['trials_seconds']:.0f} s in all; {t['warmups_trained']} warm-up(s) trained "
                  f"({t['warmup_seconds_trained']:.0f} s); {t['trials_reusing_a_warmup']} trial(s) reused one, "
                  f"avoiding {t['warmup_epochs_avoided']} warm-up epochs ≈ {t['warmup_seconds_avoided']:.0f} s "
                  f"(without sharing: ≈ {t['seconds_without_shared_warm_start']:.0f} s)."]
    atomic_write_text(project / "trials.md", "\n".join(lines) + "\n")
    return rows


def _md(value, column: str) -> str:
    if value == "" or value is None:
        return ""
    if column in (OBJECTIVE, SECONDARY):
        return f"{value:.4f}"
    if column == "seconds":
        return f"{value:.1f}"
    return _fmt(value)
