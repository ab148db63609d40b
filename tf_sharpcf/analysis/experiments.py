"""Experiment definitions (`pipelines/*.toml`) and the paper-shaped result tables.

A definition names a dataset, methods, seeds, common Config overrides and
per-method overrides, and where each hyper-parameter came from:

    name = "table2_ml-1m"
    dataset = "ml-1m"
    methods = ["bpr", "apr", "sharpcf"]
    seeds = [0, 1, 2]
    report = "final"                 # or "best" (best evaluated epoch on test)
    ri_of = "sharpcf"                # relative improvements of this method (default: the last listed)
    ri_over = ["bpr", "apr"]         # over these (default: the other listed methods)
    [common.train]
    epochs = 400
    [overrides.sharpcf.train]        # per-method Config overrides
    lam = 0.1
    [provenance]
    lam = "validation search, tune ... (trials.md)"

`plan` expands it into one `Config` per (method, seed); `summarize` turns the
finished runs' metrics.json files into Table 2's rows: mean ± std over seeds of
Recall@10, NDCG@10, Recall@20, NDCG@20 and seconds per epoch, with relative
improvements (RI) of one method over the others: by default the last listed
over the rest, i.e. SharpCF w.r.t. BPR and APR for the paper's list. Methods
are named by their registered labels (`methods.py`).
"""
from __future__ import annotations

import dataclasses
import statistics
import tomllib
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from tf_sharpcf import methods as method_registry
from tf_sharpcf.config import METHODS, Config
from tf_sharpcf.errors import ConfigError

METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    dataset: str
    methods: tuple
    seeds: tuple
    common: dict
    per_method: dict
    report: str = "final"
    provenance: dict = dataclasses.field(default_factory=dict)
    ri_of: Optional[str] = None        # None: the last of `methods`
    ri_over: Optional[tuple] = None    # None: the other methods

    @property
    def improved(self) -> str:
        """The method whose relative improvements the table reports."""
        return self.ri_of if self.ri_of is not None else self.methods[-1]

    @property
    def baselines(self) -> tuple:
        """The methods it is compared with, in table order."""
        if self.ri_over is not None:
            return tuple(self.ri_over)
        return tuple(m for m in self.methods if m != self.improved)


@dataclasses.dataclass(frozen=True)
class Run:
    method: str
    seed: int
    config: Config

    @property
    def label(self) -> str:
        return f"{self.method}-seed{self.seed}"


def load_experiment(path: Path) -> Experiment:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: experiment file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    known = {"name", "dataset", "methods", "seeds", "common", "overrides", "report", "provenance", "ri_of", "ri_over"}
    bad = set(raw) - known
    if bad:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(bad))}")
    methods = raw.get("methods", list(METHODS))
    per_method = raw.get("overrides", {})
    if not isinstance(methods, list) or not methods:
        raise ConfigError(f"{path}: methods must be a non-empty list")
    for m in per_method:
        if m not in methods:
            raise ConfigError(f"{path}: overrides for {m!r}, which is not in methods")
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"{path}: unknown method {m!r} (one of {', '.join(METHODS)})")
    report = raw.get("report", "final")
    if report not in ("final", "best"):
        raise ConfigError(f"{path}: report must be 'final' or 'best', got {report!r}")
    seeds = raw.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of integers >= 0")
    ri_of, ri_over = raw.get("ri_of"), raw.get("ri_over")
    if ri_of is not None and ri_of not in methods:
        raise ConfigError(f"{path}: ri_of {ri_of!r} is not in methods")
    if ri_over is not None and (not isinstance(ri_over, list) or not all(m in methods for m in ri_over)):
        raise ConfigError(f"{path}: ri_over must be a list of methods of the experiment, got {ri_over!r}")
    return Experiment(name=raw.get("name", path.stem), dataset=raw.get("dataset", "gowalla"),
                      methods=tuple(methods), seeds=tuple(seeds), common=raw.get("common", {}),
                      per_method=per_method, report=report, provenance=raw.get("provenance", {}),
                      ri_of=ri_of, ri_over=None if ri_over is None else tuple(ri_over))


def _merge(a: dict, b: dict) -> dict:
    out = {k: dict(v) for k, v in a.items()}
    for section, values in b.items():
        out.setdefault(section, {}).update(values)
    return out


def plan(exp: Experiment, data_dir: Optional[str] = None, epochs: Optional[int] = None) -> List[Run]:
    """One validated Config per (method, seed), in table order."""
    runs = []
    for method in exp.methods:
        sections = _merge(exp.common, exp.per_method.get(method, {}))
        sections = _merge(sections, {"data": {"dataset": exp.dataset}, "train": {"method": method}})
        if data_dir:
            sections["data"]["data_dir"] = data_dir
        if epochs is not None:
            sections["train"]["epochs"] = epochs
        for seed in exp.seeds:
            cfg = Config.from_dict(_merge(sections, {"train": {"seed": seed}}))
            try:
                cfg.validate()
            except ConfigError as e:
                raise ConfigError(f"experiment {exp.name}, {method}: {e}") from None
            if cfg.train.strategy == "parameter-server":
                raise ConfigError(f"experiment {exp.name}, {method}: strategy 'parameter-server' is not run by "
                                  "the runner (its shared warm-up branches one-process runs); train such runs "
                                  "with fit --strategy parameter-server")
            runs.append(Run(method, seed, cfg))
    return runs


def _mean_std(values: Sequence[float]):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(exp: Experiment, results: Dict[str, dict]) -> Dict:
    """results: {run label: metrics.json dict} -> table data."""
    rows = {}
    for method in exp.methods:
        runs = [results[f"{method}-seed{s}"] for s in exp.seeds if f"{method}-seed{s}" in results]
        if not runs:
            continue
        row = {m: _mean_std([r[exp.report][m] for r in runs]) for m in METRICS}
        row["seconds_per_epoch"] = _mean_std([r["seconds_per_epoch"] for r in runs])
        row["n"] = len(runs)
        rows[method] = row
    ri = {}
    if exp.improved in rows:
        for base in exp.baselines:
            if base in rows and base != exp.improved:
                ri[base] = {m: rows[exp.improved][m][0] / rows[base][m][0] - 1 for m in METRICS
                            if rows[base][m][0] > 0}
    return {"rows": rows, "ri": ri}


def column_label(exp: Experiment, method: str) -> str:
    """A method's column name: its label, after the loss when that is not BPR
    ("softmax", "softmax + SharpCF"; `method_registry.WARMUP_METHOD` is no
    regulariser)."""
    loss = _merge(exp.common, exp.per_method.get(method, {})).get("train", {}).get("loss", "bpr")
    if loss == "bpr":
        return method_registry.label(method)
    return loss if method == method_registry.WARMUP_METHOD else f"{loss} + {method_registry.label(method)}"


def history_seconds(rows: Iterable[Mapping[str, str]], after_epoch: int = 0) -> Tuple[float, float]:
    """(training, evaluation) seconds that a run's history.csv rows record for
    the epochs after `after_epoch` (a branched run's first epochs are its
    warm-up's, counted there). An epoch listed twice (a resumed run redoing
    it) counts once, its last row."""
    last = {}
    for row in rows:
        epoch = int(row["epoch"])
        if epoch > after_epoch:
            last[epoch] = row
    seconds = lambda row, key: float(row.get(key) or 0.0)   # noqa: E731  (empty: no evaluation that epoch)
    return (sum(seconds(r, "seconds") for r in last.values()),
            sum(seconds(r, "eval_seconds") for r in last.values()))


def cost_line(train_s: float, eval_s: float, runs: int, warmups: int) -> str:
    """The table's cost, for table.md: wall-clock hours of its runs."""
    shared = f" and {warmups} shared warm-up(s), each counted once" if warmups else ""
    return (f"Cost: {(train_s + eval_s) / 3600:.2f} h wall-clock (training {train_s / 3600:.2f} h, evaluation "
            f"{eval_s / 3600:.2f} h), summed over {runs} run(s){shared}, as their history.csv files recorded it "
            f"on the machine that ran them (a run's interruptions not counted)")


def table_markdown(exp: Experiment, summary: Dict, results: Dict[str, dict], cost: Optional[str] = None) -> str:
    rows, ri = summary["rows"], summary["ri"]
    methods = [m for m in exp.methods if m in rows]
    header = (["Metric", *(column_label(exp, m) for m in methods)]
              + [f"RI w.r.t. {column_label(exp, b)}" for b in ri])
    names = {"recall@10": "Recall@10", "ndcg@10": "NDCG@10", "recall@20": "Recall@20", "ndcg@20": "NDCG@20"}
    title = f"# {exp.name}: {exp.dataset}, {exp.report} epoch, mean ± std over seeds {list(exp.seeds)}"
    short = [f"{m} {rows[m]['n']}" for m in methods if rows[m]["n"] < len(exp.seeds)]
    if short:
        title += f" (runs finished so far: {', '.join(short)} of {len(exp.seeds)}; no std from one run)"
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(m, key, digits=4):
        mean, std = rows[m][key]
        return f"{mean:.{digits}f} ± {std:.{digits}f}" if rows[m]["n"] > 1 else f"{mean:.{digits}f}"
    for metric in METRICS:
        cells = [names[metric]] + [cell(m, metric) for m in methods]
        cells += [f"{ri[b][metric]:+.2%}" if metric in ri[b] else "-" for b in ri]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["Time per epoch (s), own epochs"] + [cell(m, "seconds_per_epoch", 2)
                                                  for m in methods] + ["-" for b in ri]
    lines.append("| " + " | ".join(cells) + " |")
    if cost:
        lines += ["", cost + "."]
    lines += ["", "Per run:", "", "| run | epoch | " + " | ".join(names[m] for m in METRICS) + " | s/epoch |",
              "|---|---|" + "---|" * (len(METRICS) + 1)]
    for label in sorted(results):
        r = results[label]
        lines.append(f"| {label} | {r[exp.report]['epoch']} | "
                     + " | ".join(f"{r[exp.report][m]:.4f}" for m in METRICS)
                     + f" | {r['seconds_per_epoch']:.2f} |")
    if exp.provenance:
        lines += ["", "Hyper-parameters from:", ""] + [f"- `{k}`: {v}" for k, v in exp.provenance.items()]
    return "\n".join(lines) + "\n"


def table_csv_rows(exp: Experiment, summary: Dict) -> List[Dict]:
    out = []
    for method, row in summary["rows"].items():
        rec = {"method": method, "runs": row["n"]}
        for m in (*METRICS, "seconds_per_epoch"):
            rec[f"{m}_mean"], rec[f"{m}_std"] = row[m]
        for base, values in summary["ri"].items():
            if method == exp.improved:
                for m, v in values.items():
                    rec[f"ri_vs_{base}_{m}"] = v
        out.append(rec)
    return out
