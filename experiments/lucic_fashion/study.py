"""Lucic et al. (2018)'s Fashion-MNIST study at its protocol: train, select, score, record.

For each row and seed, in order (a finished step is never redone, so the same command resumes
the study after an interruption or a new session):

1. ``gaxp-train experiment=lucic_fashion/<row> trainer.seed=<seed>`` in ``<runs>/<row>-s<seed>``
   (``trainer.resume=true`` when that directory already holds checkpoints). The run logs the
   cheap score (Inception KID and FID of 2,000 samples vs 2,000 test images) at the protocol's
   checkpoints, all kept.
2. ``gaxp-eval <run> step=best by=eval/kid metrics=lucic_fid ema=false``: the protocol's FID
   (10,000 samples vs the 10,000 test images, with KID and precision/recall) at the checkpoint
   with the lowest KID, and the same at the last checkpoint (once when they coincide).
3. ``experiments/lucic_fashion/runs/<row>-s<seed>/``: result.json (the figures, the KID curve,
   wall times, commands), summary.json, metrics.jsonl and the last sample grid; with
   ``--commit``, committed on their own (``git commit -- <that folder>``).

    python experiments/lucic_fashion/study.py --rows ns mm lsgan wgan wgan_gp dragan --seeds 0 1 --commit
    python experiments/lucic_fashion/study.py --table     # the README's table from runs/,
                                                          # the search budget's check, and
                                                          # the search's trials

The narrow search (compare_gan v1's ``params.py`` narrow ranges: beta1 0.5, lr 10^U[-4, -3],
n_disc 1, D-BN on or off where the loss allows it, clip 10^U[-2, 0], lambda 10^U[-1, 1]), at a
shorter budget, trial ``k`` of a row drawn from a generator seeded by ``<row>-<k>``; each trial's
KID curve in ``runs/search/<row>/t<k>/trial.json``; then the best trial's setting at the full
protocol as row ``<row>_searched``:

    python experiments/lucic_fashion/study.py --search ns --trials 8 --search-steps 7812 --commit
    python experiments/lucic_fashion/study.py --searched ns --seeds 0 1 --commit

Runs trained on a machine without W&B (``gpu_study.sh``) get their W&B run here afterwards:

    python experiments/lucic_fashion/study.py --wandb-replay experiments/lucic_fashion/runs/<name>
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
# gaxp-train and gaxp-eval of this checkout (``python -c`` from ROOT imports ROOT's gaxp first), so
# a study can run from a worktree of its own while the main checkout changes
GAXP = [sys.executable, "-c", "import sys; from gaxp import cli; cmd = sys.argv.pop(1); "
        "sys.argv[0] = 'gaxp-' + cmd; getattr(cli, cmd + '_main')()"]
ROWS = ("ns", "mm", "lsgan", "wgan", "wgan_gp", "dragan", "ns_sn_ema", "hinge_sn_ema")


def _run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` with its output appended to ``log``; seconds taken. Raises on failure."""
    t = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if code:
        raise SystemExit(f"study.py: {cmd[0]} exited with {code}; see {log}")
    return time.time() - t


def machine() -> str:
    """What the run trained on: ``$GAXP_STUDY_MACHINE`` (gpu_study.sh sets it), else the CPU."""
    import os
    import platform

    if os.environ.get("GAXP_STUDY_MACHINE"):
        return os.environ["GAXP_STUDY_MACHINE"]
    model = platform.processor() or platform.machine()
    try:
        names = [x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                 if x.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def _curve(run_dir: Path) -> list[dict]:
    """The run's cheap score at each checkpoint: [{step, eval/kid, eval/fid}], from its metrics."""
    return [{k: r[k] for k in ("step", "eval/kid", "eval/fid") if k in r}
            for r in _rows(run_dir / "metrics.jsonl") if "eval/kid" in r]


def train(row: str, seed: int, run_dir: Path, log: Path, extra=(), tags=()) -> list[str]:
    summary = run_dir / "summary.json"
    wandb = ([] if "logger=none" in extra else  # no W&B: gpu_study.sh's machine has none
             ["logger.wandb.group=lucic_fashion", f"logger.wandb.tags=[{','.join(['lucic_fashion', row, *tags])}]"])
    cmd = [*GAXP, "train", f"experiment=lucic_fashion/{row}", f"trainer.seed={seed}",
           f"hydra.run.dir={run_dir}", "trainer.progress=false", *wandb, *extra]
    if summary.exists():
        return cmd
    resume = ["trainer.resume=true"] if (run_dir / "checkpoints").is_dir() else []
    _run(cmd + resume, log)
    return cmd


def score(run_dir: Path, step: int, log: Path, extra=(), ema: bool = False) -> tuple[dict, float]:
    """The protocol's FID at ``step``: G itself (the paper's rows) or its EMA (gaxp's rows)."""
    out = run_dir / "eval" / f"lucic_fid_step_{step:07d}.json"
    seconds = 0.0
    if not out.exists():
        seconds = _run([*GAXP, "eval", str(run_dir), f"step={step}", "metrics=lucic_fid",
                        f"ema={str(ema).lower()}", f"json={out}", *extra], log)
    return json.loads(out.read_text()), seconds


def one(row: str, seed: int, runs: Path, results: Path, commit: bool, extra=(), eval_extra=(),
        label: str | None = None) -> dict:
    """Train, select, score and record ``experiment=lucic_fashion/<row>`` (plus ``extra``
    overrides) at ``seed``, named ``<label>-s<seed>`` (label: the row, or e.g. ``ns_searched``)."""
    label = label or row
    name = f"{label}-s{seed}"
    dest = results / name
    if (dest / "result.json").exists():
        return json.loads((dest / "result.json").read_text())
    run_dir = runs / name
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{name}.log"
    cmd = train(row, seed, run_dir, log, extra, tags=(label,) if label != row else ())
    from gaxp.evaluate import best_step

    summary = json.loads((run_dir / "summary.json").read_text())
    best, last = best_step(run_dir, "eval/kid"), summary["steps"]
    ema = row.endswith("_ema")
    at_best, s_best = score(run_dir, best, log, eval_extra, ema)
    at_last, s_last = score(run_dir, last, log, eval_extra, ema) if last != best else (at_best, 0.0)
    curve = _curve(run_dir)
    result = {"row": label, "config": f"experiment=lucic_fashion/{row}", "overrides": list(extra),
              "d_per_step": d_per_step(row, extra), "seed": seed, "best_step": best, "last_step": last,
              "best": at_best["metrics"], "last": at_last["metrics"],
              "protocol": at_best["protocol"], "curve": curve,
              "train_wall_s": summary.get("wall_time_s"), "images_per_s": summary.get("images_per_s"),
              "final_eval_s": s_best + s_last, "digest": summary.get("digest"), "machine": machine(),
              "commands": [" ".join(cmd), f"gaxp-eval {run_dir} step=best by=eval/kid "
                           f"metrics=lucic_fid ema={str(ema).lower()}", f"gaxp-eval {run_dir} "
                           f"step={last} metrics=lucic_fid ema={str(ema).lower()}"],
              "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("summary.json", "metrics.jsonl"):
        shutil.copy(run_dir / f, dest / f)
    grids = sorted((run_dir / "samples").glob("step_*.png"))
    if grids:
        shutil.copy(grids[-1], dest / "last_grid.png")
    best_grid = run_dir / "samples" / f"step_{best:07d}.png"
    if best_grid.exists():
        shutil.copy(best_grid, dest / "best_grid.png")
    (dest / "result.json").write_text(json.dumps(result, indent=1))
    if commit:
        fid = result["best"].get("eval/fid")
        _commit(dest, f"lucic_fashion: {name} finished (best-checkpoint FID {fid:.2f} at step {best})")
    return result


def d_per_step(row: str, extra=()) -> int:
    """D updates per gaxp step: the row's n_critic (5 for the WGANs), unless an override sets it."""
    for o in extra:
        if o.startswith("loss.n_critic="):
            return int(o.split("=", 1)[1])
    return 5 if row.startswith("wgan") else 1


# D-BN on or off in the narrow search (compare_gan: "off" alone for WGAN-GP and DRAGAN)
NARROW_BN = {"ns": ("batch", "none"), "mm": ("batch", "none"), "lsgan": ("batch", "none"),
             "wgan": ("batch", "none"), "wgan_gp": ("none",), "dragan": ("none",)}
# the loss's own weight in the narrow search: (override, log10 range): WGAN's clip, the penalties' lambda
NARROW_WEIGHT = {"wgan": ("loss.clip", -2, 0), "wgan_gp": ("loss.penalty_weight", -1, 1),
                 "dragan": ("regularizer.dragan.weight", -1, 1)}


def draw(row: str, k: int) -> list[str]:
    """Trial ``k`` of the narrow search for ``row``: gaxp-train overrides, drawn from a generator
    seeded by ``<row>-<k>`` (the same on every machine and session)."""
    if row not in NARROW_BN:
        raise SystemExit(f"study.py: no narrow search for row {row!r}; choose from {sorted(NARROW_BN)}")
    rnd = random.Random(f"{row}-{k}")
    lr = f"{10 ** rnd.uniform(-4, -3):.4g}"
    o = [f"optim.g.lr={lr}", f"optim.d.lr={lr}", "optim.g.b1=0.5", "optim.d.b1=0.5",
         "loss.n_critic=1", f"model.d_norm={rnd.choice(NARROW_BN[row])}"]
    if row in NARROW_WEIGHT:
        key, lo, hi = NARROW_WEIGHT[row]
        o.append(f"{key}={10 ** rnd.uniform(lo, hi):.4g}")
    return o


def length(steps: int, scores: int) -> list[str]:
    """Overrides for a run of ``steps`` gaxp steps (n_critic 1) scored at ``scores`` evenly
    spaced checkpoints, all kept: the protocol is length(15625, 4) (3,906 ... 15,624, and the end)."""
    every = steps // scores
    return [f"trainer.steps={steps}", f"trainer.ckpt_every={every}", f"trainer.sample_every={every}",
            f"metrics.every={every}", "trainer.log_every=100", f"trainer.keep={scores + 1}"]


def _trials(results: Path, row: str, ks=None) -> dict[int, dict]:
    """The finished search trials of ``row`` among trial numbers ``ks`` (all when None):
    {k: its trial.json}."""
    found = {int(f.parent.name[1:]): f for f in (results / "search" / row).glob("t*/trial.json")
             if f.parent.name[1:].isdigit()}
    return {k: json.loads(f.read_text()) for k, f in sorted(found.items()) if ks is None or k in ks}


def _ranked(trials) -> list[dict]:
    """Search trials from the lowest KID up, ties by trial number: the search's one ranking."""
    return sorted(trials, key=lambda t: (t["kid"], t["trial"]))


def search(row: str, trials, steps: int, runs: Path, results: Path, commit: bool,
           extra=()) -> list[dict]:
    """The narrow search's trials ``trials`` (trial numbers) of ``row`` at ``steps`` D updates,
    seed 0, each scored by the cheap score (KID of 2,000 vs 2,000) at two checkpoints; ranked by
    the lower. A trial already in ``results`` is not run again; one that ran another number of
    steps is refused in one line before anything trains."""
    done = _trials(results, row, trials)
    for k, trial in done.items():
        if trial["steps"] != steps:
            raise SystemExit(f"study.py: {row}'s search trial t{k} ran {trial['steps']} steps, not {steps}; "
                             f"pass --search-steps {trial['steps']}, or move "
                             f"{results / 'search' / row / f't{k}'} away to run it again")
    found = list(done.values())
    for k in trials:
        dest = results / "search" / row / f"t{k}"
        if k not in done:
            run_dir = runs / "search" / row / f"t{k}"
            run_dir.mkdir(parents=True, exist_ok=True)
            settings = draw(row, k)
            cmd = train(row, 0, run_dir, run_dir.parent / f"t{k}.log",
                        [*settings, *length(steps, 2), *extra], tags=("search", f"t{k}"))
            summary = json.loads((run_dir / "summary.json").read_text())
            curve = _curve(run_dir)
            trial = {"row": row, "trial": k, "settings": settings, "steps": steps, "curve": curve,
                     "kid": min(c["eval/kid"] for c in curve), "train_wall_s": summary.get("wall_time_s"),
                     "command": " ".join(cmd),
                     "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            dest.mkdir(parents=True, exist_ok=True)
            grids = sorted((run_dir / "samples").glob("step_*.png"))
            if grids:
                shutil.copy(grids[-1], dest / "last_grid.png")
            (dest / "trial.json").write_text(json.dumps(trial, indent=1))
            if commit:
                _commit(dest, f"lucic_fashion: search {row} t{k} finished (KID {trial['kid']:.4f})")
            found.append(trial)
    return _ranked(found)


def best_setting(row: str, results: Path, trials: int) -> list[str]:
    """The settings of the trial of lowest KID among ``row``'s search trials 0..trials-1, all of
    which must be done, at one budget."""
    folder = results / "search" / row
    found = list(_trials(results, row, range(trials)).values())
    if len(found) < trials:
        raise SystemExit(f"study.py: {len(found)} of {row}'s {trials} search trials are done in {folder}; "
                         f"run --search {row} --trials {trials} first")
    if len({t["steps"] for t in found}) > 1:
        raise SystemExit(f"study.py: {row}'s search trials in {folder} ran different numbers of steps "
                         f"({sorted({t['steps'] for t in found})}); run them again at one --search-steps")
    return _ranked(found)[0]["settings"]


def _commit(folder: Path, message: str) -> None:
    """Commit ``folder`` alone in its repository; a busy index (another git command) is retried,
    and a commit that still fails leaves the files in place with one line."""
    for attempt in range(10):
        add = subprocess.call(["git", "add", "--", "."], cwd=folder)
        if add == 0 and subprocess.call(["git", "commit", "-q", "-m", message, "--", "."], cwd=folder) == 0:
            return
        time.sleep(3 * (attempt + 1))
    print(f"study.py: could not commit {folder}; commit it by hand", file=sys.stderr)


# The paper's best FID per loss on Fashion-MNIST (a 100-setting search retrained over 50 seeds,
# Lucic et al. 2018), and its 2-SD goal after this study's narrow search.
PAPER = {"mm": (29.6, 1.6), "ns": (26.5, 1.6), "lsgan": (30.7, 2.2), "wgan": (21.5, 1.6),
         "wgan_gp": (24.5, 2.1), "dragan": (27.7, 1.2)}


def _results(results: Path) -> list[dict]:
    """Every finished run's ``result.json`` under ``results``, in folder order."""
    return [json.loads(f.read_text()) for f in sorted(results.glob("*/result.json"))]


def table(results: Path) -> str:
    """The README's table from ``results/*/result.json``: per row, the best-checkpoint and final
    FID (mean and each seed), the seeds' mean KID and precision/recall at the best checkpoint, the
    paper's best and the mean best-checkpoint FID's distance to it."""
    found = {}
    for r in _results(results):
        found.setdefault(r["row"], []).append(r)
    lines = ["| row | seeds | FID best ckpt (mean; each) | FID final (mean; each) | KID x1e3 (best, mean) "
             "| precision / recall (best, mean) | paper's best (± SD) | mean best - paper "
             "| train min (each) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in [r for base in ROWS for r in (base, f"{base}_searched")]:
        rs = sorted(found.get(row, []), key=lambda r: r["seed"])
        if not rs:
            continue
        fb = [r["best"]["eval/fid"] for r in rs]
        fl = [r["last"]["eval/fid"] for r in rs]
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        each = lambda v: ", ".join(f"{x:.1f}" for x in v)  # noqa: E731
        kid = mean([r["best"]["eval/kid"] * 1e3 for r in rs])
        pr = " / ".join(_share(mean([r["best"][k] for r in rs])) for k in ("eval/precision", "eval/recall"))
        paper = PAPER.get(row.removesuffix("_searched"))
        ref = f"{paper[0]} ± {paper[1]}" if paper else "-"
        gap = f"{mean(fb) - paper[0]:+.1f}" if paper else "-"
        mins = ", ".join(f"{r['train_wall_s'] / 60:.0f}" for r in rs)
        lines.append(f"| {row} | {', '.join(str(r['seed']) for r in rs)} | {mean(fb):.1f}; {each(fb)} "
                     f"| {mean(fl):.1f}; {each(fl)} | {kid:.2f} | {pr} | {ref} | {gap} | {mins} |")
    return "\n".join(lines)


def search_table(results: Path) -> str:
    """The README's table of the narrow search from ``results/search/<row>/t<k>/trial.json``: per
    row, its trials from the lowest KID up, with the drawn setting (lr, D's norm, the clip or the
    penalty weight), the cheap score (KID x 1e3, and FID of 2,000) at each checkpoint, and the
    training minutes; the row's searched setting (``--searched``) is the first."""
    lines = ["| row | trial | lr | D norm | clip / lambda | KID x1e3 (each ckpt) | FID 2k (each ckpt) "
             "| D updates | train min |", "|---|---|---|---|---|---|---|---|---|"]
    for row in ROWS:
        for t in _ranked(_trials(results, row).values()):
            s = dict(o.split("=", 1) for o in t["settings"])
            weight = s[NARROW_WEIGHT[row][0]] if row in NARROW_WEIGHT else "-"
            kid = ", ".join(f"{c['eval/kid'] * 1e3:.1f}" for c in t["curve"])
            fid = ", ".join(f"{c['eval/fid']:.1f}" if "eval/fid" in c else "-" for c in t["curve"])
            mins = f"{t['train_wall_s'] / 60:.0f}" if t.get("train_wall_s") else "-"
            lines.append(f"| {row} | t{t['trial']} | {s['optim.d.lr']} | {s['model.d_norm']} | {weight} "
                         f"| {kid} | {fid} | {t['steps'] * d_per_step(row, t['settings']):,} | {mins} |")
    return "\n".join(lines)


def _result_d_per_step(result: dict) -> int:
    """D updates per gaxp step of a finished run (older result.json files lack the field)."""
    return result.get("d_per_step", d_per_step(result["row"]))


def budget_check(results: Path) -> str:
    """Whether a shorter budget ranks runs as the full protocol does: at each of the protocol's
    checkpoints, the search's score there (the lowest KID up to it, as ``search`` ranks its trials)
    against each landed run's best-checkpoint FID, as Spearman's rho and Kendall's tau over all
    runs (scipy's). The narrow search's budget is the first checkpoint whose ranks agree."""
    from scipy.stats import kendalltau, spearmanr

    runs = [r for r in _results(results) if r.get("curve")]
    fid = [r["best"]["eval/fid"] for r in runs]
    lines = ["| search score after (D updates) | runs | Spearman rho | Kendall tau |", "|---|---|---|---|"]
    for k in range(min(len(r["curve"]) for r in runs) if len(runs) >= 3 else 0):
        score = [min(c["eval/kid"] for c in r["curve"][:k + 1]) for r in runs]
        updates = max(r["curve"][k]["step"] * _result_d_per_step(r) for r in runs)
        lines.append(f"| {updates:,} | {len(runs)} | {spearmanr(score, fid).statistic:.2f} "
                     f"| {kendalltau(score, fid).statistic:.2f} |")
    return "\n".join(lines)


def _share(v: float) -> str:
    """A precision or recall for the table: two decimals, or two significant digits below 0.01,
    so that a recall of 0.0014 does not read as 0."""
    return f"{v:.2f}" if v >= 0.01 else f"{v:.2g}"


def plot(results: Path, out: Path):
    """The cheap score (KID of 2,000 vs 2,000) against D updates, one line per run: a colour per
    row, a line style and marker per seed, so that a row's seeds read as one family. Returns the
    figure (saved to ``out``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _results(results)
    rows = sorted({r["row"] for r in runs})
    colours = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        n_critic = _result_d_per_step(r)
        steps = [c["step"] * n_critic for c in r["curve"]]
        line, marker = styles[r["seed"] % len(styles)]
        ax.plot(steps, [c["eval/kid"] * 1e3 for c in r["curve"]], linestyle=line, marker=marker,
                color=colours(rows.index(r["row"]) % colours.N), label=f"{r['row']} s{r['seed']}")
    ax.set_xlabel("D updates")
    ax.set_ylabel("KID x 1e3 (2,000 vs 2,000 test)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return fig


def wandb_replay(dest: Path, runs: Path) -> Path:
    """A W&B run (offline unless logged in) for a finished run that trained without one
    (gpu_study.sh's machine has no W&B), from what ``runs/<name>/`` holds: the config composed as
    the run composed it, every row of metrics.jsonl at its own step, the best and last grids, the
    summary, and the machine it trained on. Written under ``<runs>/<name>/wandb``; its folder."""
    from dataclasses import asdict

    from hydra import compose, initialize_config_dir

    from gaxp.config import load
    from gaxp.logging.writers import WandbWriter
    from gaxp.training import run_name

    result = json.loads((dest / "result.json").read_text())
    row = result["config"].split("/", 1)[1]
    label = result["row"]
    tags = ",".join(dict.fromkeys(["lucic_fashion", row, label]))
    overrides = [o for o in result["overrides"] if o != "logger=none"]
    run_dir = runs / dest.name
    with initialize_config_dir(config_dir=str(ROOT / "gaxp" / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[result["config"], f"trainer.seed={result['seed']}",
                                          f"out_dir={run_dir}", "logger.wandb.group=lucic_fashion",
                                          f"logger.wandb.tags=[{tags}]", *overrides])
    config = load(cfg)
    (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
    writer = WandbWriter(config.logger.wandb, run_dir, asdict(config), None, name=run_name(config))
    for r in _rows(dest / "metrics.jsonl"):
        writer.log(r["step"], {k: v for k, v in r.items() if k != "step"})
    for step, grid in ((result["best_step"], "best_grid.png"), (result["last_step"], "last_grid.png")):
        if (dest / grid).exists():
            writer.log_image(step, "samples", dest / grid)
    writer.update_config({"machine": result.get("machine"), "replayed_from": str(dest)})
    writer.summarize(json.loads((dest / "summary.json").read_text()))
    writer.close()
    if writer.run is None:
        raise SystemExit(f"study.py: W&B could not record {dest.name}; see the warning above")
    return run_dir / "wandb"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(ROWS[:6]), choices=ROWS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--runs", type=Path, default=ROOT / "outputs" / "lucic_fashion",
                   help="where the run directories live (checkpoints: not committed)")
    p.add_argument("--results", type=Path, default=HERE / "runs",
                   help="where each finished run's figures, metrics and grids are copied")
    p.add_argument("--commit", action="store_true", help="git-commit each finished run's folder")
    p.add_argument("--extra", nargs="*", default=[], help="gaxp-train overrides (a smoke test)")
    p.add_argument("--eval-extra", nargs="*", default=[], help="gaxp-eval overrides (a smoke test)")
    p.add_argument("--by-seed", action="store_true",
                   help="every row's seed 0 first, then every row's seed 1 (default: row by row)")
    p.add_argument("--search", choices=sorted(NARROW_BN),
                   help="run the narrow search's trials of this row (seed 0), then print the ranking")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--trial", nargs="+", type=int, metavar="K",
                   help="run only these of the search's trials (gpu_study.sh's workers share them out)")
    p.add_argument("--search-steps", type=int, default=7812,
                   help="each trial's D updates (7,812: the protocol's second checkpoint, the first "
                        "whose score ranks the full runs; --table's budget check)")
    p.add_argument("--searched", choices=sorted(NARROW_BN),
                   help="the best search trial's setting of this row at the full protocol, --seeds")
    p.add_argument("--wandb-replay", nargs="+", type=Path, metavar="RESULT_DIR",
                   help="a W&B run for each finished run folder (runs/<name>) trained without one")
    p.add_argument("--table", action="store_true",
                   help="print the results table, the budget check and the search's trials, and redraw "
                        "kid_curves.png from --results, then stop")
    args = p.parse_args()
    if args.wandb_replay:
        for dest in args.wandb_replay:
            print(f"{dest.name}: {wandb_replay(dest.resolve(), args.runs.resolve())}")
        return
    if args.table:
        print(table(args.results))
        print()
        print(budget_check(args.results))
        print()
        print(search_table(args.results))
        plot(args.results, HERE / "kid_curves.png")
        return
    if args.search:
        ks = args.trial if args.trial is not None else range(args.trials)
        if any(not 0 <= k < args.trials for k in ks):
            raise SystemExit(f"study.py: --trial takes trial numbers from 0 to {args.trials - 1} (--trials {args.trials})")
        for t in search(args.search, ks, args.search_steps, args.runs.resolve(),
                        args.results.resolve(), args.commit, args.extra):
            print(f"{args.search} t{t['trial']}: KID {t['kid']:.4f}  {' '.join(t['settings'])}")
        return
    if args.searched:
        setting = [*best_setting(args.searched, args.results.resolve(), args.trials), *length(15625, 4)]
        for seed in args.seeds:
            r = one(args.searched, seed, args.runs.resolve(), args.results.resolve(), args.commit,
                    [*setting, *args.extra], args.eval_extra, label=f"{args.searched}_searched")
            print(f"{args.searched}_searched-s{seed}: best FID {r['best'].get('eval/fid'):.2f} "
                  f"(step {r['best_step']}), last {r['last'].get('eval/fid'):.2f}", flush=True)
        return
    order = ([(r, s) for s in args.seeds for r in args.rows] if args.by_seed
             else [(r, s) for r in args.rows for s in args.seeds])
    for row, seed in order:
        r = one(row, seed, args.runs.resolve(), args.results.resolve(), args.commit,
                args.extra, args.eval_extra)
        print(f"{row}-s{seed}: best FID {r['best'].get('eval/fid'):.2f} (step {r['best_step']}), "
              f"last {r['last'].get('eval/fid'):.2f}", flush=True)


if __name__ == "__main__":
    main()
