"""The paper's Table 1 and Fig. 4, rerun on the mini world with one budget, one inference per row kind,
and the base model under every inference a row uses (issue 15, item 8).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/table1_mini.py                  # 30 iterations, seeds 0-2
    python benchmarks/table1_mini.py --iterations 1 --seeds 0 --images-per-prompt 1 --eval-prompts 2 \\
        --out /tmp/t1.json                                                    # a smoke run

Every trained row starts from the shipped mini T2I model and PEN, runs the same number of iterations ×
32 images (the decoupled ablation: two runs of that many, one per network), and is evaluated on the 30
held-out prompts from the same noise (seed 1234 + training seed), with deterministic DDIM. A row's
inference is one of five, each defined once below; the base model is scored under each, so every
trained row is read against the base model under *its own* inference (Δ columns, paired by seed):
identifiers the base model never learnt and an expansion cost it by themselves.

| row | training | inference |
|---|---|---|
| base model | none | each of the five below |
| DPOK weighted sum, raw | T2I only, Σ 0.25·r_k of the raw rewards, every sample, no identifiers | plain |
| weighted sum, group z (Flow-GRPO) | T2I only, mean of the four per-prompt z-scores, no identifiers | plain |
| DPOK weighted sum 0.7/0.1/0.1/0.1, raw | as DPOK, aesthetic weighted 0.7 (Fig. 4) | plain |
| T2I tuning only | T2I only, Parrot (Pareto + group z + identifiers), no PEN | identifiers |
| PEN only (Promptist-style) | PEN only, Pareto, no identifiers | expansion |
| preference reward only | T2I only, preference's per-prompt z-score | plain |
| w/o joint optimisation (decoupled) | a T2I-only run with the SFT PEN and a PEN-only run, combined | Parrot's |
| w/o prompt expansion at inference | Parrot (the default job) | identifiers |
| w/o original-prompt guidance | Parrot | expansion + identifiers |
| Parrot | Parrot: `parrot train` at this budget | Parrot's |
| Parrot + KL (`--config mini-kl`) | Pareto filter + group z, exact KL β = 0.01 to the pre-RL model | Parrot's |
| Parrot + KL β = 0.003 | as Parrot + KL, a weaker pull to the pre-RL model | Parrot's |

Inferences: *plain* = the prompt as given, CFG 5; *identifiers* = all four identifiers prefixed, CFG 5;
*expansion* = the PEN's expansion, CFG 5; *expansion + identifiers*; *Parrot's* = expansion +
identifiers + Eq. 5 with the default job's settings (`eval.w1`, `eval.w2`, `eval.guidance_rescale`).

Measured per row and seed: each reward's mean and their average; the per-prompt hypervolume above each
reward's 10% quantile over the base model's plain-prompt images (pooled over seeds, stated in the
JSON); the worst per-reward change against the base model under the same inference; the attribute
checker's shape / colour / background accuracy (an independent judge, never a reward). Over seeds:
mean ± the half-width of the 95% Student-t interval. Fig. 4: the training-batch mean of the four rewards
per iteration for the two DPOK weightings and Parrot.

Resumable across sessions: every (seed, row) evaluation is kept in ``<out stem>_evals.json`` beside the
JSON (commit it with the results), and a seed whose rows are all there is not trained again; within a
session finished trainings under --work-dir are reused. Writes benchmarks/results/table1_mini.json,
table1_mini_evals.json and table1_mini_curves.png (+ .svg).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from pareto_study import CHECKED, REFERENCE_QUANTILE, interval

from parrot_t2i.config import load_config
from parrot_t2i.evaluate import evaluate, inference_from_config
from parrot_t2i.mini import weights_path
from parrot_t2i.mini.nets import AttributeChecker
from parrot_t2i.pareto import per_prompt_hypervolume
from parrot_t2i.pen import PromptExpander
from parrot_t2i.plots import reward_curves, save
from parrot_t2i.policies import load_policy
from parrot_t2i.prompts import read_prompt_file
from parrot_t2i.provenance import code_version
from parrot_t2i.rewards import build_rewards
from parrot_t2i.runs import open_combined, open_run, run_expander, run_policy
from parrot_t2i.trainer import train

RESULTS = Path(__file__).parent / "results"
T2I_ONLY = ["pen.pretrained=null", "train.pen=false"]
# Scalarisation baselines train on every sample, pinned rather than left to the default rule (the
# Pareto filter for "parrot" only), so that a change of that default cannot move these rows.
NO_FILTER = "objective.pareto_filter=false"
RAW = "objective.reward_normalization=none"
GROUP_Z = "objective.reward_normalization=group"
SCALAR = [NO_FILTER, "prompts.identifiers=false", *T2I_ONLY]
# key: (preset, overrides). Each starts from the default job (or the preset) at the study's budget.
TRAININGS = {
    "dpok_raw": (None, ["objective.name=weighted_sum", "objective.weights=[0.25, 0.25, 0.25, 0.25]", RAW, *SCALAR]),
    "ws_group_z": (None, ["objective.name=weighted_sum", GROUP_Z, *SCALAR]),
    "dpok_raw_0.7": (None, ["objective.name=weighted_sum", "objective.weights=[0.7, 0.1, 0.1, 0.1]", RAW, *SCALAR]),
    "t2i_only": (None, T2I_ONLY),
    "pen_only": (None, ["train.t2i=false", "prompts.identifiers=false"]),
    "preference_only": (None, ["objective.name=single", "objective.reward=mini_preference", GROUP_Z, *SCALAR]),
    "decoupled_t2i": (None, ["train.pen=false"]),  # the decoupled ablation: the T2I model with the SFT PEN ...
    "decoupled_pen": (None, ["train.t2i=false"]),  # ... and the PEN against the base model, combined at load time
    "parrot": (None, []),
    "parrot_kl": ("mini-kl", []),
    "parrot_kl0.003": ("mini-kl", ["train.kl_coef=0.003"]),  # a weaker pull, to see whether gains come before drift
}
# Each inference once: changes to the default job's evaluation settings (expansion + all identifiers + Eq. 5).
INFERENCES = {
    "plain": {"expander": None, "identifiers": [], "original_guidance": False},
    "identifiers": {"expander": None, "original_guidance": False},
    "expansion": {"identifiers": [], "original_guidance": False},
    "expansion + identifiers": {"original_guidance": False},
    "Parrot's": {},
}
# (key, label, training: a key of TRAININGS, two keys combined (T2I run, PEN run) or None, inference)
ROWS = [
    *[(f"base/{kind}", f"base model, {kind} inference", None, kind) for kind in INFERENCES],
    ("dpok_raw", "DPOK weighted sum (0.25 each), raw", "dpok_raw", "plain"),
    ("ws_group_z", "weighted sum, group z (Flow-GRPO)", "ws_group_z", "plain"),
    ("dpok_raw_0.7", "DPOK weighted sum (0.7/0.1/0.1/0.1), raw", "dpok_raw_0.7", "plain"),
    ("t2i_only", "T2I tuning only", "t2i_only", "identifiers"),
    ("pen_only", "PEN only (Promptist-style)", "pen_only", "expansion"),
    ("preference_only", "preference reward only (group z)", "preference_only", "plain"),
    ("decoupled", "w/o joint optimisation (decoupled)", ("decoupled_t2i", "decoupled_pen"), "Parrot's"),
    ("parrot/no_expansion", "w/o prompt expansion at inference", "parrot", "identifiers"),
    ("parrot/no_eq5", "w/o original-prompt guidance", "parrot", "expansion + identifiers"),
    ("parrot", "Parrot (the default job)", "parrot", "Parrot's"),
    ("parrot_kl", "Parrot + KL β = 0.01 (--config mini-kl)", "parrot_kl", "Parrot's"),
    ("parrot_kl0.003", "Parrot + KL β = 0.003", "parrot_kl0.003", "Parrot's"),
]
CURVES = {"DPOK 0.7/0.1/0.1/0.1": "dpok_raw_0.7", "DPOK equal": "dpok_raw", "Parrot": "parrot"}


def trained(out: Path, preset: str | None, overrides: list[str], budget: list[str]) -> dict:
    """Train into ``out`` unless a finished training is there; its Fig. 4 curve and cost."""
    if not (out / "summary.json").is_file():
        shutil.rmtree(out, ignore_errors=True)  # an interrupted training starts over
        train(load_config(preset, [*budget, f"train.output_dir={out}", *overrides]))
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    names = [r.name for r in open_run(out)[0].rewards]
    summary = json.loads((out / "summary.json").read_text())
    return {
        "curve": [float(np.mean([h[f"reward/{n}/mean"] for n in names])) for h in history],
        "wall_time_s": summary["wall_time_s"],
        "iteration_s": float(np.median([h["time/iteration"] for h in history])),
        "code_version": summary.get("code_version", code_version()),  # the code that trained it
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--eval-prompts", type=int, default=30, help="the first N held-out prompts (30: all)")
    parser.add_argument("--work-dir", default=str(RESULTS.parent.parent / "runs" / "table1"))
    parser.add_argument("--out", default=str(RESULTS / "table1_mini.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store_path = out.with_name(out.stem + "_evals.json")
    budget = {"iterations": args.iterations, "images_per_prompt": args.images_per_prompt, "prompts": args.eval_prompts}
    store = json.loads(store_path.read_text()) if store_path.is_file() else {}
    if store.get("budget", budget) != budget:
        parser.error(f"{store_path} holds another budget ({store['budget']}); pass another --out")
    store.update(budget=budget, evals=store.get("evals", {}), training=store.get("training", {}))

    prompts = read_prompt_file("builtin:mini-heldout", "held-out prompts")[: args.eval_prompts]
    defaults = load_config(None)
    names = [spec.name for spec in defaults.rewards]
    rewards = build_rewards(defaults.rewards)
    checker = AttributeChecker.from_pretrained(weights_path("checker")).eval()
    common = [f"train.num_iterations={args.iterations}", "eval.file=null", "train.log_images_every=0"]
    for seed in args.seeds:
        done = store["evals"].setdefault(str(seed), {})
        runs: dict[str, Path] = {}
        for key, label, training, kind in ROWS:
            if key in done:
                continue
            for name in (training,) if isinstance(training, str) else training or ():
                runs[name] = Path(args.work_dir) / f"seed{seed}" / name
                preset, overrides = TRAININGS[name]
                cost = trained(runs[name], preset, overrides, [*common, f"train.seed={seed}"])
                store["training"].setdefault(name, {})[str(seed)] = cost
            if training is None:
                config, policy = defaults, load_policy(defaults.model.pretrained, defaults.model)
                expander = PromptExpander.from_pretrained(defaults.pen.pretrained, defaults.pen.template)
            elif isinstance(training, tuple):  # the T2I model of one run, the PEN of the other
                config, policy, expander = open_combined(*(runs[name] for name in training))
            else:
                config, checkpoint = open_run(runs[training])
                policy, expander = run_policy(config, checkpoint), run_expander(config, checkpoint)
            # One definition per inference for every row: the default job's settings, changed by the kind.
            inference = inference_from_config(defaults, expander, trained_identifiers=True)
            inference = replace(inference, **INFERENCES[kind], seed=1234 + seed)
            result = evaluate(
                policy,
                rewards,
                names,
                prompts,
                images_per_prompt=args.images_per_prompt,
                inference=inference,
                batch_size=32,
                desc=f"seed {seed}: {label}",
            )
            done[key] = {
                "prompts": result.prompts,
                "scores": result.scores.round(decimals=5).tolist(),
                "checker": checker.prompt_hits(result.images, result.prompts, CHECKED),
                "code_version": code_version(),
            }
            store_path.write_text(json.dumps(store))  # every evaluation kept as it comes
        write_results(args, store, names, started)


def write_results(args, store: dict, names: list[str], started: float) -> None:
    """Aggregate every seed whose rows are all evaluated into the JSON, the table and Fig. 4."""
    seeds = sorted(int(s) for s, rows in store["evals"].items() if all(key in rows for key, *_ in ROWS))
    if not seeds:
        return
    evals = {key: [store["evals"][str(s)][key] for s in seeds] for key, *_ in ROWS}
    reference = np.quantile(np.concatenate([r["scores"] for r in evals["base/plain"]]), REFERENCE_QUANTILE, axis=0)
    table = {}
    for key, label, training, kind in ROWS:
        per_seed: dict[str, list[float]] = {}
        for record, base in zip(evals[key], evals[f"base/{kind}"]):
            scores, base_means = np.array(record["scores"]), np.array(base["scores"]).mean(0)
            means = scores.mean(0)
            values = {
                **dict(zip(names, means.tolist())),
                "average": float(means.mean()),
                "delta_average": float(means.mean() - base_means.mean()),
                "hv_per_prompt": per_prompt_hypervolume(scores, record["prompts"], reference),
                "worst_change": float((means - base_means).min()),
                **{a: float(np.mean(record["checker"][a])) for a in CHECKED},
            }
            for column, value in values.items():
                per_seed.setdefault(column, []).append(value)
        table[key] = {"label": label, "inference": kind, **{c: interval(v) for c, v in per_seed.items()}}
        runs = (training,) if isinstance(training, str) else training or ()
        if runs:
            table[key]["iteration_s"] = float(
                np.mean([store["training"][r][str(s)]["iteration_s"] for r in runs for s in seeds])
            )
    columns = [*names, "average", "delta_average", "hv_per_prompt", "worst_change", *CHECKED]
    print(
        f"\n{args.eval_prompts} held-out prompts × {args.images_per_prompt} images; {args.iterations} iterations "
        f"per training; seeds {seeds}; mean ± 95% interval over seeds; Δ and worst change against the base "
        "model under the row's inference"
    )
    print("| row | inference | " + " | ".join(columns) + " |\n|---|---|" + "---:|" * len(columns))
    for entry in table.values():
        cells = " | ".join(f"{entry[c]['mean']:.4f} ± {entry[c]['ci95']:.4f}" for c in columns)
        print(f"| {entry['label']} | {entry['inference']} | {cells} |")
    curves = {
        label: [float(np.mean(ys)) for ys in zip(*(store["training"][key][str(s)]["curve"] for s in seeds))]
        for label, key in CURVES.items()
    }
    figure = reward_curves(
        curves, "Fig. 4 analogue: training-batch mean of the four rewards, averaged over seeds", overlay=True
    )
    out = Path(args.out)
    save(figure, out.with_name(out.stem + "_curves.png"))
    result = {
        "code_version": code_version(),
        "budget": {
            **store["budget"],
            "images_per_iteration": 32,
            "seeds": seeds,
            "trainings": {k: {"preset": p or "the default job", "overrides": o} for k, (p, o) in TRAININGS.items()},
        },
        "eval": {
            "noise_seed": "1234 + training seed",
            "steps": "the default job's (20), deterministic DDIM",
            "inferences": {k: {c: str(v) for c, v in changes.items()} for k, changes in INFERENCES.items()},
            "hypervolume_reference": {
                "quantile": REFERENCE_QUANTILE,
                "of": "each reward over the base model's plain-prompt images, pooled over seeds",
                "point": dict(zip(names, reference.tolist())),
            },
        },
        "table": table,
        "fig4_curves": curves,
        "training_code_versions": sorted({c["code_version"] for t in store["training"].values() for c in t.values()}),
        "wall_seconds_this_invocation": round(time.perf_counter() - started, 1),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out} ({result['wall_seconds_this_invocation'] / 60:.1f} min this invocation)", flush=True)


if __name__ == "__main__":
    main()
