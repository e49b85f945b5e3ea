"""Compare the variants of a sweep over seeds: a markdown table, plots and a JSON dump.

Reads a Hydra multirun directory (each job's ``summary.json``, ``metrics.jsonl`` and
``.hydra/overrides.yaml``; the variant is the job's overrides without the seed; a population job's
members count as jobs with their own seeds and varied values), or, online, the
runs of a W&B project and group (the variant is the config keys that differ between runs, without
the seed). For every variant and metric it reports the mean +- standard error over seeds of the
final value and of the best value (lowest, or highest for ``--maximize`` metrics), and writes

  <out>/compare.md               the table (also printed)
  <out>/compare.json             every number behind it, per seed
  <out>/<metric>_curves.png      the metric against the step: mean over seeds with a +-1 SE band
  <out>/<metric>_final_box.png   a box plot of the final value per variant
  <out>/samples.png              with --samples: each variant's last sample image, side by side

Examples:
  python scripts/compare.py outputs/multirun/2025-01-01/12-00-00 --metrics train/d_loss train/g_loss
  python scripts/compare.py --wandb me/gaxp --group 2025-01-01/12-00-00 --out cmp/
  python scripts/compare.py <sweep> --metrics eval/modes --final-only \
      --rename GAN=regularizer.pacgan.pack=1 PacGAN2=regularizer.pacgan.pack=2
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np

SEED_KEYS = ("trainer.seed",)
NOT_VARIANT = ("out_dir", "runs_root", "hydra.", "logger", "trainer.progress")


def _as_dict(overrides: list[str]) -> dict:
    pairs = (o.lstrip("+~").split("=", 1) for o in overrides)
    return {k: v for k, v, *_ in (p + [""] for p in pairs)}


def variants(settings: list[dict]) -> tuple[list[str], dict]:
    """Per run, the label of its variant: the settings whose values differ between the runs,
    without the seed and where or how a run logs. Also the settings every run shares."""
    keys = sorted({k for d in settings for k in d if k not in SEED_KEYS
                   and not k.startswith(NOT_VARIANT)})
    differ = [k for k in keys if len({d.get(k) for d in settings}) > 1]
    labels = [" ".join(f"{k}={d.get(k)}" for k in differ) or "(all runs alike)" for d in settings]
    shared = {k: settings[0].get(k) for k in keys if k not in differ} if settings else {}
    return labels, shared


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _overrides(job: Path) -> list[str]:
    import yaml

    path = job / ".hydra" / "overrides.yaml"
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])] if path.exists() else []


def _member_settings(member: Path, job_settings: dict) -> dict:
    """A population member (gaxp.population) as if it were its own job: the population job's
    overrides, then the member's seed and varied values."""
    population = member.parent.parent
    info = json.loads((population / "population.json").read_text())
    i = int(json.loads((member / "summary.json").read_text())["population"]["member"])
    o = {k: v for k, v in _as_dict(_overrides(population)).items()
         if k != "trainer.population" and not k.startswith("population.")}
    o[SEED_KEYS[0]] = str(info["seeds"][i])
    for name, values in info["vary"].items():
        if name != "seed":
            o[f"population.vary.{name}"] = str(values[i])
    return o


def load_local(sweep: Path) -> tuple[list[dict], list[dict], dict]:
    """Runs (variant, seed, dir, metric rows) of a multirun directory, its failures (with their
    variants) and the overrides every job shares."""
    runs = []
    for summary in sorted(sweep.rglob("summary.json")):
        job = summary.parent
        if (job / "population.json").exists():
            continue  # a population's own summary; its members are read one by one
        o = _as_dict(_overrides(job))
        if (job.parent.parent / "population.json").exists():
            o = _member_settings(job, o)
        runs.append({"seed": o.get(SEED_KEYS[0], "0"), "dir": str(job), "settings": o,
                     "rows": _read_jsonl(job / "metrics.jsonl")})
    failures = _read_jsonl(sweep / "failures.jsonl")
    labels, shared = variants([r["settings"] for r in runs]
                              + [_as_dict(f.get("overrides", [])) for f in failures])
    for item, label in zip(runs + failures, labels):
        item["variant"] = label
    return runs, failures, shared


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: str(v)})
    return out


def load_wandb(path: str, group: str, metrics: list[str]) -> tuple[list[dict], list[dict], dict]:
    """Runs of a W&B group (needs network and a login); the variant is the config keys that
    differ between the runs, without the seed."""
    import wandb  # lazily: the local mode needs neither the network nor a login

    api_runs = list(wandb.Api().runs(path, filters={"group": group}))
    configs = [_flatten(dict(r.config)) for r in api_runs]
    labels, shared = variants(configs)
    runs = []
    for r, c, label in zip(api_runs, configs, labels):
        rows = [dict(row, step=row.get("_step")) for row in r.scan_history(keys=["_step", *metrics])]
        runs.append({"variant": label, "seed": c.get("trainer.seed", "0"), "dir": r.url,
                     "rows": rows})
    return runs, [], shared


def _series(rows: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], float(r[metric])) for r in rows
           if metric in r and isinstance(r[metric], (int, float))]
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def _mean_se(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    se = float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(np.mean(v)), "se": se, "n": len(v), "values": v.tolist()}


def summarize(runs: list[dict], metrics: list[str], maximize: set[str]) -> dict:
    """{variant: {"seeds": [...], "dirs": [...], metric: {"final": stats, "best": stats}}}."""
    out: dict = {}
    for run in runs:
        v = out.setdefault(run["variant"], {"seeds": [], "dirs": [], "_series": {}})
        v["seeds"].append(run["seed"])
        v["dirs"].append(run["dir"])
        for m in metrics:
            v["_series"].setdefault(m, []).append(_series(run["rows"], m))
    for v in out.values():
        for m, series in v["_series"].items():
            series = [(s, y) for s, y in series if len(y)]
            if not series:
                continue
            best = np.max if m in maximize else np.min
            v[m] = {"final": _mean_se([y[-1] for _, y in series]),
                    "best": _mean_se([float(best(y)) for _, y in series])}
    return out


def _fmt(stats: dict | None) -> str:
    if stats is None:
        return "-"
    se = "n/a" if math.isnan(stats["se"]) else f"{stats['se']:.4g}"
    return f"{stats['mean']:.4g} ± {se}"


def rename(items: list[dict], pairs: list[str]) -> list[str]:
    """Relabel variants in place with ``NEW=VARIANT`` pairs (e.g. ``GAN=regularizer.pacgan.pack=1``;
    the first ``=`` splits). Returns the new names in the order given, for the table's rows."""
    names = {}
    for pair in pairs:
        new, sep, old = pair.partition("=")
        if not (sep and new and old):
            raise ValueError(f"--rename takes NEW=VARIANT (got {pair!r})")
        names[old] = new
    known = {item["variant"] for item in items}
    missing = sorted(set(names) - known)
    if missing:
        raise ValueError(f"--rename: no variant {missing[0]!r}; variants: {', '.join(sorted(known))}")
    for item in items:
        item["variant"] = names.get(item["variant"], item["variant"])
    return list(names.values())


def table(summary: dict, metrics: list[str], failures: list[dict], shared: dict,
          order: list[str] = (), kinds: tuple = ("final", "best")) -> str:
    """The markdown table: rows in ``order`` first, then sorted; columns per metric and kind."""
    failed = {}
    for f in failures:
        failed[f["variant"]] = failed.get(f["variant"], 0) + 1
    head = ["variant", "seeds", "failed"] + [f"{m} {k}" for m in metrics for k in kinds]
    common = " ".join(f"{k}={v}" for k, v in shared.items()) or "-"
    lines = [f"Shared by every run: `{common}`. Cells: mean ± standard error over seeds.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = set(summary) | set(failed)
    for name in [n for n in order if n in names] + sorted(names - set(order)):
        v = summary.get(name, {})
        cells = [f"`{name}`", str(len(v.get("seeds", []))), str(failed.get(name, 0))]
        cells += [_fmt(v.get(m, {}).get(k)) for m in metrics for k in kinds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ranked(summary: dict, metric: str, maximize: bool) -> list[str]:
    """Variants by the mean final value of ``metric``, best first; those without it last."""
    def key(name):
        stats = summary[name].get(metric, {}).get("final")
        if stats is None or not np.isfinite(stats["mean"]):
            return (1, 0.0, name)
        return (0, -stats["mean"] if maximize else stats["mean"], name)

    return sorted(summary, key=key)


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric)


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (imported late: the table needs none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(summary: dict, metric: str, out: Path) -> list[Path]:
    """Curves (mean over seeds, +-1 SE band, on the steps every seed logged) and a box plot."""
    plt = _pyplot()
    many = len(summary) > 6  # then the legend goes beside the axes
    fig, ax = plt.subplots(figsize=(9.5 if many else 7, 4))
    finals, names = [], []
    cmap = plt.get_cmap("tab10" if len(summary) <= 10 else "tab20")  # distinct colours per variant
    for i, (name, v) in enumerate(sorted(summary.items())):
        series = [(s, y) for s, y in v["_series"].get(metric, []) if len(y)]
        if not series:
            continue
        steps = sorted(set.intersection(*(set(s.tolist()) for s, _ in series)))
        ys = np.array([[dict(zip(s.tolist(), y.tolist()))[t] for t in steps] for s, y in series])
        mean = ys.mean(0)
        se = ys.std(0, ddof=1) / math.sqrt(len(ys)) if len(ys) > 1 else np.zeros_like(mean)
        color = cmap(i % cmap.N)
        ax.plot(steps, mean, label=f"{name} (n={len(ys)})", color=color)
        ax.fill_between(steps, mean - se, mean + se, alpha=0.2, color=color)
        finals.append([y[-1] for _, y in series])
        names.append(name)
    ax.set(xlabel="step", ylabel=metric, title=f"{metric}: mean ± 1 SE over seeds")
    ax.legend(fontsize=8, **({"loc": "center left", "bbox_to_anchor": (1.01, 0.5)} if many else {}))
    fig.tight_layout()
    curves = out / f"{_slug(metric)}_curves.png"
    fig.savefig(curves, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(min(14, max(5, 1.8 * len(names))), 4.5))
    ax.boxplot(finals)
    for i, values in enumerate(finals, start=1):  # every seed, too: boxes of 2-3 points mislead
        ax.scatter(np.full(len(values), i) + np.linspace(-0.08, 0.08, len(values)), values,
                   s=14, color="k", zorder=3)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right", fontsize=8)
    ax.set(ylabel=f"final {metric}", title=f"final {metric} per variant")
    fig.tight_layout()
    box = out / f"{_slug(metric)}_final_box.png"
    fig.savefig(box, dpi=100)
    plt.close(fig)
    return [curves, box]


def sample_sheet(summary: dict, order: list[str], out: Path) -> Path | None:
    """One PNG of the last sample image (``<run>/samples/*.png``) of each variant's lowest seed,
    titled with the variant: the pictures behind the table, side by side."""
    plt = _pyplot()
    picks = []
    for name in [n for n in order if n in summary] + sorted(set(summary) - set(order)):
        seeds = summary[name]["seeds"]
        first = min(range(len(seeds)), key=lambda i: (len(str(seeds[i])), str(seeds[i])))
        pngs = sorted((Path(summary[name]["dirs"][first]) / "samples").glob("*.png"))
        if pngs:
            picks.append((f"{name} (seed {seeds[first]}, {pngs[-1].stem})", pngs[-1]))
    if not picks:
        return None
    cols = min(4, len(picks))
    rows = math.ceil(len(picks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, png) in zip(axes.ravel(), picks):
        image = plt.imread(png)
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)  # grayscale grids stay gray
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    path = out / "samples.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("sweep", nargs="?", type=Path, help="a multirun directory (local mode)")
    p.add_argument("--metrics", nargs="+", default=["train/d_loss", "train/g_loss"])
    p.add_argument("--maximize", nargs="*", default=[], help="metrics where higher is better")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read a W&B project instead")
    p.add_argument("--group", help="the W&B group (a sweep's directory name)")
    p.add_argument("--out", type=Path, help="output directory (default: <sweep>/compare)")
    p.add_argument("--rename", nargs="+", default=[], metavar="NEW=VARIANT",
                   help="row names, in this order, e.g. GAN=regularizer.pacgan.pack=1")
    p.add_argument("--final-only", action="store_true", help="table: final values, not best")
    p.add_argument("--rank", metavar="METRIC",
                   help="order the rows by this metric's mean final value, best first (--maximize "
                        "metrics: highest), e.g. --rank eval/fid; default: by name")
    p.add_argument("--samples", action="store_true",
                   help="also <out>/samples.png: each variant's last sample image (lowest seed)")
    a = p.parse_args(argv)
    if (a.sweep is None) == (a.wandb is None) or (a.wandb and not a.group):
        p.error("give a multirun directory, or --wandb ENTITY/PROJECT with --group")
    if a.sweep is not None and not a.sweep.is_dir():
        p.error(f"{a.sweep} is not a directory")
    runs, failures, shared = (load_local(a.sweep) if a.sweep
                              else load_wandb(a.wandb, a.group, a.metrics))
    if not runs:
        p.error("no finished runs found (no summary.json under the directory)")
    try:
        order = rename(runs + failures, a.rename)
    except ValueError as e:
        p.error(str(e))
    out = a.out or (a.sweep / "compare" if a.sweep else Path("compare"))
    out.mkdir(parents=True, exist_ok=True)
    if a.rank and a.rank not in a.metrics:
        p.error(f"--rank {a.rank} must be one of --metrics ({', '.join(a.metrics)})")
    summary = summarize(runs, a.metrics, set(a.maximize))
    if a.rank and not order:
        order = ranked(summary, a.rank, a.rank in a.maximize)
    kinds = ("final",) if a.final_only else ("final", "best")
    md = table(summary, a.metrics, failures, shared, order, kinds)
    (out / "compare.md").write_text(md)
    pngs = [str(x) for m in a.metrics for x in plot(summary, m, out)]
    sheet = sample_sheet(summary, order, out) if a.samples and a.sweep else None
    pngs += [str(sheet)] if sheet else []
    dump = {name: {k: v for k, v in s.items() if k != "_series"} for name, s in summary.items()}
    (out / "compare.json").write_text(json.dumps(
        {"metrics": a.metrics, "shared": shared, "variants": dump, "failures": failures,
         "plots": pngs}, indent=1, default=str))
    print(md + f"\nwrote {out}/compare.md, compare.json and {len(pngs)} PNGs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
