"""One configuration trained on several seeds: its before/after changes, with 95% intervals over seeds.

    python benchmarks/run_seeds.py --name mini-kl runs/default-candidate runs/default-candidate-s{1,2}

Reads, per run folder, what the run measured itself (``summary.json``: held-out prompts with the
run's own inference, before = the base model with that inference and noise) and, where
``benchmarks/study_protocol_eval.py`` has scored it, the same run under the objective study's
protocol (``benchmarks/results/study_protocol_<run>.json``, before = the study's base row of that
seed). Says which seeds, and whether the mean over seeds, meet issue 15's bar for the default job
(``parrot_t2i.stats.bar_failures``). Prints both tables and writes
``benchmarks/results/run_seeds_<name>.json``. No model is run.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from parrot_t2i.provenance import code_version
from parrot_t2i.runs import run_config
from parrot_t2i.stats import BAR_CHECKER_TOLERANCE, BAR_MAX_DROP, bar_failures, mean_ci

RESULTS = Path(__file__).parent / "results"
CHECKER = {"checker/shape": "shape", "checker/colour": "colour", "checker/background": "background"}


def changes(before: dict, after: dict) -> dict[str, float]:
    """after − before for every measure both hold, checker keys named as the study names them."""
    rename = lambda key: CHECKER.get(key, key)
    return {rename(k): after[k] - v for k, v in before.items() if k in after and isinstance(v, (int, float))}


def summarise(per_run: list[dict[str, float]]) -> dict[str, dict]:
    keys = [k for k in per_run[0] if all(k in run for run in per_run)]
    out = {}
    for key in keys:
        values = [run[key] for run in per_run]
        mean, half = mean_ci(values)
        # One seed has no interval: null keeps the JSON strict (NaN is not JSON).
        out[key] = {"mean": mean, "ci95": half if math.isfinite(half) else None, "per_seed": values}
    return out


def print_table(title: str, table: dict[str, dict]) -> None:
    print(f"\n{title}\n| measure | change (mean ± 95% over seeds) | per seed |\n|---|---:|---|")
    for key, v in table.items():
        half = "—" if v["ci95"] is None else f"{v['ci95']:.4f}"
        print(f"| {key} | {v['mean']:+.4f} ± {half} | {', '.join(f'{x:+.4f}' for x in v['per_seed'])} |")


def verdict(failures: list[str]) -> str:
    return "meets the bar" if not failures else "misses the bar: " + ", ".join(failures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders of one configuration, one per seed")
    parser.add_argument("--name", required=True, help="names the JSON: benchmarks/results/run_seeds_NAME.json")
    args = parser.parse_args()
    own, protocol, records = [], [], []
    for run in map(Path, args.runs):
        summary_path = run / "summary.json"
        if not summary_path.is_file():
            parser.error(f"{run}: no summary.json (the run has not finished)")
        summary = json.loads(summary_path.read_text())
        record = {
            "run": str(run),
            "wall_time_s": summary["wall_time_s"],
            "code_version": summary.get("code_version", "not recorded"),  # runs before it was: unknown
            "own": changes(summary["before"], summary["after"]),
        }
        own.append(record["own"])
        study = RESULTS / f"study_protocol_{run.name}.json"
        if study.is_file():
            scored = json.loads(study.read_text())
            record["study_protocol"] = changes(scored["before"], scored["after"])
            record["study_seed"] = scored["seed"]
            protocol.append(record["study_protocol"])
        config = run_config(run)
        names = [spec.name for spec in config.rewards]  # one configuration: the same in every run
        record["seed"] = config.train.seed
        record["bar_failures"] = bar_failures(record["own"], names)
        records.append(record)
    own_table = summarise(own)
    result = {
        "code_version": code_version(),
        "runs": records,
        "own_inference": own_table,
        "bar": {
            "of": "issue 15's default-job bar on the run's own inference: average and per-prompt hypervolume "
            f"up, no reward down by more than {BAR_MAX_DROP}, checker colour and background at most "
            f"{BAR_CHECKER_TOLERANCE} below the base",
            "seeds_passing": sum(not r["bar_failures"] for r in records),
            "mean_failures": bar_failures({k: v["mean"] for k, v in own_table.items()}, names),
        },
        "study_protocol": summarise(protocol) if len(protocol) == len(records) else None,
    }
    print_table(f"{args.name}: the run's own inference, {len(own)} seeds", result["own_inference"])
    for record in records:
        print(f"seed {record['seed']}: {verdict(record['bar_failures'])}")
    print(f"mean over seeds: {verdict(result['bar']['mean_failures'])}")
    if result["study_protocol"]:
        print_table(f"{args.name}: the study's protocol", result["study_protocol"])
    out = RESULTS / f"run_seeds_{args.name}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
