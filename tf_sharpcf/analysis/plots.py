"""The paper's analysis figures from `fit` run directories: each figure's table and its drawing.

A table is a `pandas.DataFrame` (what goes into the figure's CSV); a `plot_*`
function draws one table into a PNG with matplotlib's Agg canvas (no pyplot,
no display). One panel per dataset where runs of several datasets are given.

  curves:      Recall@K per evaluated epoch, warm-up boundary marked (Fig. 2)
  landscape:   BPR loss along a filter-normalised random direction (Fig. 3)
  longtail:    Recall@K per item-degree group (Fig. 4)
  sensitivity: final Recall@20 / NDCG@20 against λ or E (Figs. 5, 6)
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tf_sharpcf.analysis import landscape
from tf_sharpcf.analysis.runs import Run, warm_starts
from tf_sharpcf import methods
from tf_sharpcf.data.interactions import Interactions
from tf_sharpcf.errors import DataError
from tf_sharpcf.evaluation.ranking import Evaluator
from tf_sharpcf.evaluation.metrics import degree_groups


def _color(method: str) -> Optional[str]:
    return methods.get(method).color if method in methods.names() else None


PARAM_NAMES = {"lam": ("λ", "λ (weight of the trajectory loss)"), "window": ("E", "E (epoch window)")}


def _by_dataset(table: pd.DataFrame):
    """[(short dataset name, rows)]: a dataset given as a folder is named by its last part."""
    return [(Path(name).name, rows) for name, rows in table.groupby("dataset", sort=False)]


def _panels(n: int, rows: int = 1, width: float = 5.5, height: float = 4.0):
    fig = Figure(figsize=(width * n, height * rows), layout="constrained")
    axes = fig.subplots(rows, n, squeeze=False)
    return fig, axes


def _colors(rows: pd.DataFrame) -> Dict[str, str]:
    """{label: colour}: the method's colour while each method has one run in
    the panel, matplotlib's cycle otherwise."""
    runs = rows.drop_duplicates("label")
    if runs["method"].is_unique and all(_color(m) for m in runs["method"]):
        return {l: _color(m) for l, m in zip(runs["label"], runs["method"])}
    return {l: f"C{n}" for n, l in enumerate(runs["label"])}


def _save(fig: Figure, out) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    return out


# ---------------------------------------------------------------------------
# Fig. 2: training curves


def curves_table(runs: Sequence[Run], metric: str = "recall@20") -> pd.DataFrame:
    """Columns dataset, label, method, run, warmup_epochs, epoch, <metric>: one row
    per evaluated epoch (history rows with the metric filled)."""
    rows = []
    for r in runs:
        if metric not in r.history:
            raise DataError(f"{r.path / 'history.csv'}: no column {metric!r}")
        h = r.history.dropna(subset=[metric])
        for epoch, value in zip(h["epoch"], h[metric]):
            rows.append({"dataset": r.dataset, "label": r.label, "method": r.method, "run": str(r.path),
                         "warmup_epochs": r.config.train.warmup_epochs, "epoch": int(epoch),
                         metric: float(value)})
    return pd.DataFrame(rows, columns=["dataset", "label", "method", "run", "warmup_epochs", "epoch", metric])


def plot_curves(table: pd.DataFrame, out, metric: str = "recall@20") -> Path:
    """Line per run; a dashed line after the last warm-up epoch (epochs are 1-based,
    so warm-up covers epochs 1..E_start)."""
    groups = _by_dataset(table)
    fig, axes = _panels(len(groups))
    for ax, (dataset, t) in zip(axes[0], groups):
        colors = _colors(t)
        for label, c in t.groupby("label", sort=False):
            ax.plot(c["epoch"], c[metric], marker="o", label=label, color=colors[label])
        for w in sorted(set(t.loc[t["method"].map(warm_starts), "warmup_epochs"]) or set(t["warmup_epochs"])):
            ax.axvline(w, color="grey", linestyle="--", linewidth=1, label=f"end of warm-up (epoch {w})")
        ax.set_title(f"{dataset}: training curves")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("recall", "Recall").replace("ndcg", "NDCG"))
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, out)


# ---------------------------------------------------------------------------
# Fig. 3: loss landscapes


def landscape_tables(runs: Sequence[Run], data: Dict[str, Interactions], ts: Sequence[float],
                     num_triples: int = 200_000, direction_seed: int = 0, triple_seed: int = 0,
                     flat_at: Sequence[float] = (0.5, 1.0)) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """-> (curves, flatness).

    curves: dataset, label, method, run, t, bpr_loss. The same sampled training
    triples (`landscape.sample_triples(data, num_triples, triple_seed)`) and the
    same direction seed are used for every run of a dataset.
    flatness: dataset, label, method, run, loss_at_0, and rise@s = (L(s) +
    L(−s))/2 − L(0) for each s in flat_at.
    """
    triples = {name: landscape.sample_triples(d, num_triples, triple_seed) for name, d in data.items()}
    curves, flat = [], []
    for r in runs:
        if r.config.train.loss != "bpr" or r.config.model.similarity != "dot":
            raise DataError(f"{r.path}: the landscape is BPR's loss on dot-product scores; this run trained "
                            f"--loss {r.config.train.loss} on --similarity {r.config.model.similarity} scores")
        user_emb, item_emb = r.embeddings()
        losses = landscape.loss_landscape(user_emb, item_emb, *triples[r.dataset], ts, direction_seed)
        key = {"dataset": r.dataset, "label": r.model_label, "method": r.method, "run": str(r.path),
               "embedding_epoch": r.embedding_epoch}
        curves += [{**key, "t": float(t), "bpr_loss": float(v)} for t, v in zip(ts, losses)]
        rise = landscape.flatness(ts, losses, flat_at)
        flat.append({**key, "loss_at_0": float(np.interp(0.0, ts, losses)),
                     **{f"rise@{s:g}": v for s, v in rise.items()}})
    return pd.DataFrame(curves), pd.DataFrame(flat)


def plot_landscape(table: pd.DataFrame, out) -> Path:
    """Per dataset: the loss L(t) (left) and its rise L(t) − L(0) (right)."""
    groups = _by_dataset(table)
    fig, axes = _panels(2, rows=len(groups))
    for row, (dataset, t) in zip(axes, groups):
        colors = _colors(t)
        for label, c in t.groupby("label", sort=False):
            color = colors[label]
            base = c.loc[(c["t"].abs()).idxmin(), "bpr_loss"]
            row[0].plot(c["t"], c["bpr_loss"], label=label, color=color)
            row[1].plot(c["t"], c["bpr_loss"] - base, label=label, color=color)
        row[0].set_title(f"{dataset}: training BPR loss at Θ + t·d")
        row[1].set_title(f"{dataset}: rise above t = 0")
        row[0].set_ylabel("BPR loss")
        row[1].set_ylabel("BPR loss − loss at t = 0")
        for ax in row:
            ax.set_xlabel("t (filter-normalised random direction d)")
            ax.grid(alpha=0.3)
            ax.legend()
    return _save(fig, out)


# ---------------------------------------------------------------------------
# Fig. 4: long-tail items


def longtail_table(runs: Sequence[Run], data: Dict[str, Interactions], k: int = 20,
                   edges: Sequence[int] = (0, 100, 200, 300)) -> pd.DataFrame:
    """Columns dataset, label, method, run, group, degree_lo, degree_hi, items,
    recall@k, users: Recall@k restricted to the test items whose training degree
    is in [degree_lo, degree_hi), over the users with such a test item
    (`Evaluator.recall_by_item_group`)."""
    rows = []
    evaluators = {name: Evaluator(d, ks=(k,)) for name, d in data.items()}
    for r in runs:
        d = data[r.dataset]
        group = degree_groups(d.item_degree(), edges)
        user_emb, item_emb = r.embeddings()
        by_group = evaluators[r.dataset].recall_by_item_group(user_emb, item_emb, group, k=k)
        for g in range(len(edges) - 1):
            recall, users = by_group.get(g, (float("nan"), 0))
            rows.append({"dataset": r.dataset, "label": r.model_label, "method": r.method, "run": str(r.path),
                         "embedding_epoch": r.embedding_epoch, "group": g, "degree_lo": int(edges[g]), "degree_hi": int(edges[g + 1]),
                         "items": int((group == g).sum()), f"recall@{k}": recall, "users": users})
    return pd.DataFrame(rows)


def plot_longtail(table: pd.DataFrame, out, k: int = 20) -> Path:
    """Grouped bars: one group per degree bin, one bar per run."""
    groups = _by_dataset(table)
    fig, axes = _panels(len(groups), width=6.5)
    col = f"recall@{k}"
    for ax, (dataset, t) in zip(axes[0], groups):
        bins = t.drop_duplicates("group").sort_values("group")
        colors = _colors(t)
        labels = list(colors)
        width = 0.8 / len(labels)
        x = np.arange(len(bins))
        for n, label in enumerate(labels):
            c = t[t["label"] == label].sort_values("group")
            bars = ax.bar(x + (n - (len(labels) - 1) / 2) * width, c[col], width, label=label,
                          color=colors[label])
            ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
        ax.set_xlim(-0.5, len(bins) - 0.5)
        ax.set_xticks(x, [f"[{lo}, {hi})\n{it} items, {u} users" for lo, hi, it, u in
                          zip(bins["degree_lo"], bins["degree_hi"], bins["items"], bins["users"])])
        ax.set_title(f"{dataset}: Recall@{k} by item degree")
        ax.set_xlabel("item degree (training interactions)")
        ax.set_ylabel(f"Recall@{k} within the group")
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    return _save(fig, out)


# ---------------------------------------------------------------------------
# Figs. 5, 6: sensitivity to λ and E


def sensitivity_table(runs: Sequence[Run], param: str) -> pd.DataFrame:
    """Columns dataset, label, method, run, split, <param>, final_epoch,
    recall@20, ndcg@20 (final epoch), best_recall@20, sorted by dataset and
    <param>. split is "validation" for a tuner trial's folder (keras-tuner's
    trial.json beside the run files: it trained on the validation split's
    training part and scored the held-out part), else "test"."""
    if param not in PARAM_NAMES:
        raise DataError(f"unknown parameter {param!r}: not one of {', '.join(PARAM_NAMES)}")
    rows = []
    for r in runs:
        if r.metrics is None:
            raise DataError(f"{r.path}: no metrics.json (the run has not finished)")
        final = r.metrics["final"]
        rows.append({"dataset": r.dataset, "label": r.label, "method": r.method, "run": str(r.path),
                     "split": "validation" if (r.path / "trial.json").exists() else "test",
                     param: getattr(r.config.train, param), "final_epoch": final["epoch"],
                     "recall@20": final["recall@20"], "ndcg@20": final["ndcg@20"],
                     "best_recall@20": r.metrics["best"]["recall@20"]})
    return pd.DataFrame(rows).sort_values(["dataset", param], kind="stable").reset_index(drop=True)


def plot_sensitivity(table: pd.DataFrame, param: str, out) -> Path:
    """Recall@20 (left) and NDCG@20 (right) against the parameter, a line per
    dataset; λ on a log axis (symmetric-log when λ = 0 is among the runs)."""
    fig, axes = _panels(2)
    for n, (dataset, t) in enumerate(_by_dataset(table)):
        for ax, metric in zip(axes[0], ("recall@20", "ndcg@20")):
            ax.plot(t[param], t[metric], marker="o", label=dataset, color=f"C{n}")
    for ax, metric in zip(axes[0], ("Recall@20", "NDCG@20")):
        if param == "lam":
            positive = table.loc[table[param] > 0, param]
            if (table[param] <= 0).any():
                ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1e-3)
            else:
                ax.set_xscale("log")
        else:
            ax.set_xticks(sorted(set(table[param])))
        ax.set_title(f"{metric} against {PARAM_NAMES[param][0]}")
        ax.set_xlabel(PARAM_NAMES[param][1])
        ax.set_ylabel(f"{metric} on {' and '.join(sorted(set(table['split'])))} (final epoch)")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, out)
