"""When does Pareto selection pay? A like-with-like study of Parrot's objectives on the mini world (issue 15).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/pareto_study.py                  # every row, seeds 0-4
    python benchmarks/pareto_study.py --seeds 0 --iterations 1 --rows random --eval-prompts 4   # smoke run

Every trained row starts from the shipped mini T2I model, trains the T2I model only (no PEN, so
the objective is the only difference) with the reward identifiers, for the same number of
iterations and images per iteration, and is evaluated the same way: the 30 held-out prompts, all
four identifiers prefixed, CFG 5, deterministic DDIM from the noise of seed 1234 + training seed
(paired across rows). The default budget: 10 iterations × 32 images, lr 1e-3, 10 DDIM steps in
training (half of them trained per sample) and 20 at evaluation, the same for every row. Rows:

| row | objective | grouping |
|---|---|---|
| base, plain prompt | — (for reference: the prompt without identifiers) | |
| base + identifiers | — (what every trained row is compared against) | |
| random (control) | zero-mean random weights: what any update costs by itself | 4 prompts × 8 |
| DPOK weighted sum, raw | Σ_k r_k / K, raw rewards, every sample | Algorithm 1: 1 prompt × 4 k × 8 |
| Parrot Eq. 4, raw | r_{k_i} / \\|P\\| on the global first front, raw rewards (the paper) | Algorithm 1, global scope |
| weighted sum, group z (Flow-GRPO) | mean_k of per-prompt z-scores, every sample | 4 prompts × 8 |
| normalise-then-sum (GDPO) | Σ_k group z, standardised over the batch | 4 prompts × 8 |
| Pareto filter + group z | mean_k z on each prompt's first front only | 4 prompts × 8 |
| front rank + crowding | standardised −rank + crowding tie-break | 4 prompts × 8 |
| dominance count | standardised (dominated − dominating) | 4 prompts × 8 |
| HV contribution | standardised exclusive hypervolume contribution | 4 prompts × 8 |
| Parrot Eq. 4, group z | the previous default job's objective | 4 prompts × 8 |
| drift control | KL β = 0.01 on Pareto z, HV contribution, group-z sum; PPO clip 0.1 × 2 epochs | 4 prompts × 8 |
| single reward | one reward's group z alone (one-hot weights), for each of the four | 4 prompts × 8 |

Measured per row and seed: each reward's mean and their average; the per-prompt hypervolume (each
prompt's images above a reference point: each reward's 10th percentile over the base +
identifiers row's images, pooled over seeds, stated in the JSON); the worst per-reward change
against base + identifiers; the attribute checker's shape / colour / background accuracy (an
independent judge: it is never a reward); the fraction of samples reaching a backward pass and the
seconds per iteration; for comparison, Table 1's old measure (all images pooled, against the
origin). Over seeds: mean and 95% Student-t interval; the best Pareto row and the
best scalarisation are compared by paired per-seed differences.

`--extra-rewards mini_detail` adds the hard fifth reward (issue 15, item 6; docs/MINI_WORLD.md) to
training and evaluation alike: the grouped rows then draw K prompts × 8 images per iteration and
Algorithm 1 draws 1 prompt × K identifiers × 8, so every row still sees the same number of images
(40 with K = 5), and results go to their own work folder and JSON (``pareto_study_mini_detail``).
Row ``alone`` then trains on the first added reward alone: the control that says whether it can
rise at all. A user reward is added the same way, e.g. ``--extra-rewards study_rewards:calm``.

`--preset mini-flow` runs the same rows on the flow model (`builtin:mini-flow`): every row then
starts from that preset (LoRA on the transformer's attention, the flow SDE at a = 0.7, and its KL
β = 0.01 on every row that sets no KL of its own; pass `--learning-rate 3e-3`, the preset's rate,
to train as it does), and results go to their own folder and JSON (``pareto_study_mini-flow``).

Resumable: each finished training and each evaluation is kept under --work-dir; rerun the same
command after an interruption. Writes benchmarks/results/pareto_study.json and pareto_study.png.
"""

from __future__ import annotations

import argparse
import dataclasses
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
import yaml

from parrot_t2i.config import Config, load_config
from parrot_t2i.evaluate import Inference, evaluate, inference_from_config
from parrot_t2i.mini import weights_path
from parrot_t2i.mini.nets import AttributeChecker
from parrot_t2i.pareto import hypervolume, per_prompt_hypervolume
from parrot_t2i.policies import Policy, load_policy
from parrot_t2i.prompts import read_prompt_file
from parrot_t2i.provenance import code_version
from parrot_t2i.rewards import build_rewards
from parrot_t2i.runs import open_run, run_policy
from parrot_t2i.stats import mean_ci, seeds_to_resolve, within_group_correlation
from parrot_t2i.trainer import train

RESULTS = Path(__file__).parent / "results"
GROUP_Z = "objective.reward_normalization=group"  # per-prompt z-scores of each reward
PARETO_Z = ["objective.name=weighted_sum", "objective.pareto_filter=true", GROUP_Z]
# Scalarisation and control rows train on every sample, pinned rather than left to the default rule
# (the filter for "parrot" only), so that a change of that default cannot move these rows.
NO_FILTER = "objective.pareto_filter=false"
SUM_Z = ["objective.name=weighted_sum", NO_FILTER, GROUP_Z]
ALGORITHM_1 = ["sample.group_by=prompt_reward", "sample.prompts_per_iteration=1", "sample.images_per_prompt=8"]
# (key, label, family, overrides); family "base" rows are not trained.
# In the order a default invocation runs them (each seed goes through every row before the next).
ROWS = [
    ("base_plain", "base, plain prompt", "base", None),
    ("base", "base + identifiers", "base", None),
    ("random", "random weights (control)", "control", ["objective.name=random", NO_FILTER]),
    (
        "ws_group_z",
        "weighted sum, group z (Flow-GRPO)",
        "scalarisation",
        SUM_Z,
    ),
    ("pareto_z", "Pareto filter + group z", "pareto", PARETO_Z),
    (
        "dpok_raw",
        "DPOK weighted sum, raw",
        "scalarisation",
        [
            "objective.name=weighted_sum",
            NO_FILTER,
            "objective.reward_normalization=none",
            *ALGORITHM_1,
        ],
    ),
    (
        "parrot_raw",
        "Parrot Eq. 4, raw (Algorithm 1)",
        "pareto",
        ["objective.name=parrot", "objective.reward_normalization=none", "objective.selection=global", *ALGORITHM_1],
    ),
    (
        "gdpo",
        "normalise-then-sum (GDPO)",
        "scalarisation",
        ["objective.name=normalize_then_sum", NO_FILTER],
    ),
    ("front_rank", "front rank + crowding", "pareto", ["objective.name=front_rank"]),
    ("dominance", "dominance count", "pareto", ["objective.name=dominance_count"]),
    ("hv_contrib", "HV contribution", "pareto", ["objective.name=hv_contribution"]),
    # Drift control (issue 15, item 4): each changes one thing. β = 0.01 balances the two gradients: after
    # one lr-1e-3 update the summed per-step KL is ≈ 1.2 per sample and β = 10 gives a gradient norm
    # ≈ 600 against the policy term's 0.35 (measured), so larger β only holds the model at the reference.
    ("pareto_z_kl", "Pareto filter + group z, KL β = 0.01", "pareto", [*PARETO_Z, "train.kl_coef=0.01"]),
    (
        "hv_contrib_kl",
        "HV contribution, KL β = 0.01",
        "pareto",
        ["objective.name=hv_contribution", "train.kl_coef=0.01"],
    ),
    (
        "ws_group_z_kl",
        "weighted sum, group z, KL β = 0.01",
        "scalarisation",
        [*SUM_Z, "train.kl_coef=0.01"],
    ),
    # β = 0.001: a tenth of the level gradients, to see whether the policy term then moves the rewards
    # while the KL still holds colour binding.
    ("pareto_z_kl001", "Pareto filter + group z, KL β = 0.001", "pareto", [*PARETO_Z, "train.kl_coef=0.001"]),
    (
        "ws_group_z_kl001",
        "weighted sum, group z, KL β = 0.001",
        "scalarisation",
        [*SUM_Z, "train.kl_coef=0.001"],
    ),
    (
        "pareto_z_ppo",
        "Pareto filter + group z, PPO clip 0.1 × 2 epochs",
        "pareto",
        [*PARETO_Z, "train.clip_range=0.1", "train.num_inner_epochs=2"],
    ),
    (
        "parrot_z",
        "Parrot Eq. 4, group z (old default)",
        "pareto",
        ["objective.name=parrot", GROUP_Z],
    ),
    # The paper's single-reward baseline: one-hot weights, each of the four default rewards alone. A
    # scalarisation too, so the best of them competes in the automatic comparison.
    *[
        (
            f"single_{name}",
            f"{name} alone (one-hot weights)",
            "scalarisation",
            ["objective.name=single", f"objective.reward=mini_{name}", NO_FILTER, GROUP_Z],
        )
        for name in ("aesthetic", "preference", "alignment", "sentiment")
    ],
    # With --extra-rewards only: is the first added reward learnable on its own (group z-scores)? A
    # conflict can only tell objectives apart if the reward it adds rises when trained alone.
    (
        "alone",
        "{added} alone (control)",
        "control",
        ["objective.name=single", "objective.reward={added}", NO_FILTER],
    ),
]
NEEDS_EXTRA = {"alone"}  # rows that train on an added reward
CHECKED = ("shape", "colour", "background")
REFERENCE_QUANTILE = 0.10


def train_row(out: Path, preset: str | None, overrides: list[str], common: list[str], name: str) -> dict:
    """Train one row (``preset`` + ``common`` + the row's ``overrides``) into ``out`` unless a
    finished training is there; its cost statistics."""
    if not (out / "summary.json").is_file():
        print(f"{name}: training", flush=True)
        shutil.rmtree(out, ignore_errors=True)  # an interrupted training starts over
        train(load_config(preset, [*common, f"train.output_dir={out}", *overrides]))
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    weights_nonzero = [h["selected_fraction"] for h in history]
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall_time_s": summary["wall_time_s"],
        "iteration_s": float(np.median([h["time/iteration"] for h in history])),
        "backward_fraction": float(np.mean(weights_nonzero)),
        "code_version": summary.get("code_version", "not recorded"),  # the code that trained it
    }


def evaluate_row(
    cache: Path,
    policy: Policy,
    rewards,
    names,
    prompts,
    inference: Inference,
    images_per_prompt: int,
    checker: AttributeChecker,
) -> dict:
    """Per-image rewards and checker hits on the held-out prompts, cached in ``cache``."""
    if cache.is_file():
        record = json.loads(cache.read_text())
        # A cache from another reward set is evaluated again (caches before "rewards" was recorded: by count).
        if record.get("rewards", names) == names and len(record["scores"][0]) == len(names):
            return record
    result = evaluate(
        policy, rewards, names, prompts, images_per_prompt=images_per_prompt, inference=inference, batch_size=32
    )
    hits = checker.prompt_hits(result.images, result.prompts, CHECKED)
    record = {
        "prompts": result.prompts,
        "scores": result.scores.tolist(),
        "checker": hits,
        "rewards": names,
        "code_version": code_version(),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(record))
    return record


def interval(values: list[float]) -> dict:
    mean, half = mean_ci(values)
    return {"mean": mean, "ci95": half, "per_seed": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rows", nargs="+", help="row keys, in the order to run them (default: every row)")
    parser.add_argument("--iterations", type=int, default=10)
    # 10 iterations at 1e-3 move the model about as far as the default job's 50 at 5e-4, measurably
    # (issue 15: random weights alone cost alignment −0.16 / −0.07 at this budget).
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--train-steps", type=int, default=10, help="DDIM steps while training (evaluation uses --eval-steps)"
    )
    parser.add_argument("--eval-steps", type=int, default=20)
    parser.add_argument(
        "--timestep-fraction", type=float, default=0.5, help="share of the training steps each sample's update covers"
    )
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--eval-prompts", type=int, default=30, help="the first N held-out prompts (30: all)")
    parser.add_argument(
        "--extra-rewards",
        nargs="*",
        default=[],
        help="rewards added to the default four: names, or YAML entries such as "
        "'{name: mini_detail, args: {threshold: 0.006, width: 0.003}}'",
    )
    parser.add_argument(
        "--preset",
        help="the job every row starts from (a packaged name or a YAML path; default: the default job), "
        "e.g. mini-flow for the flow model. Rows pin only their objective, KL or clip and the budget "
        "flags above, so a preset's KL applies to every row that sets none",
    )
    parser.add_argument("--work-dir", help="default: runs/pareto_study, suffixed with the preset and extra rewards")
    parser.add_argument("--out", help="default: benchmarks/results/pareto_study.json, suffixed likewise")
    args = parser.parse_args()
    extra = [entry if isinstance(entry, dict) else {"name": entry} for entry in map(yaml.safe_load, args.extra_rewards)]
    # Each reward setting gets its own folder and JSON: a cached row of another setting is never reused.
    suffix = (f"_{Path(args.preset).stem}" if args.preset else "") + "".join(
        f"_{e['name']}" + "".join(f"_{k}{v}" for k, v in sorted(e.get("args", {}).items())) for e in extra
    )
    suffix = suffix.replace(":", "-")  # a user reward "module:function" names a folder too
    args.work_dir = args.work_dir or str(RESULTS.parent.parent / "runs" / f"pareto_study{suffix}")  # whatever the cwd
    args.out = args.out or str(RESULTS / f"pareto_study{suffix}.json")
    available = [key for key, *_ in ROWS if key not in NEEDS_EXTRA or extra]
    args.rows = args.rows or available
    unknown = set(args.rows) - set(available)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)} with these rewards; rows: {', '.join(available)}")
    started = time.perf_counter()
    added = extra[0]["name"] if extra else None
    rows = [
        (key, label.format(added=added), family, overrides and [o.format(added=added) for o in overrides])
        for name in dict.fromkeys(["base", *args.rows])
        for key, label, family, overrides in ROWS
        if key == name
    ]
    prompts = read_prompt_file("builtin:mini-heldout", "held-out prompts")[: args.eval_prompts]
    reward_set = [dataclasses.asdict(spec) for spec in load_config(args.preset).rewards] + extra
    # K prompts per iteration (Algorithm 1's rows: 1 prompt × K identifiers), 8 images each: one budget for every row.
    world = ["rewards=" + json.dumps(reward_set), f"sample.prompts_per_iteration={len(reward_set)}"]
    defaults = load_config(args.preset, world)
    names = [spec.name for spec in defaults.rewards]
    rewards = build_rewards(defaults.rewards)
    checker = AttributeChecker.from_pretrained(weights_path("checker")).eval()
    work = Path(args.work_dir)
    budget = [
        f"train.num_iterations={args.iterations}",
        f"train.learning_rate={args.learning_rate}",
        f"sample.num_inference_steps={args.train_steps}",
        f"train.timestep_fraction={args.timestep_fraction}",
    ]
    common = [
        "pen.pretrained=null",
        "train.pen=false",
        "prompts.identifiers=true",
        "eval.file=null",
        "train.log_images_every=0",
        "train.checkpoint_every=0",
        *world,
        *budget,
    ]

    evals: dict[str, dict[int, dict]] = {key: {} for key, *_ in rows}
    costs: dict[str, dict[int, dict]] = {key: {} for key, *_ in rows}
    for seed in args.seeds:
        for key, label, _, overrides in rows:
            plain = dict(
                original_guidance=False,
                guidance_scale=5.0,
                guidance_rescale=0.0,
                num_inference_steps=args.eval_steps,
                seed=1234 + seed,
            )  # the protocol, pinned
            inference = replace(inference_from_config(defaults, None, trained_identifiers=key != "base_plain"), **plain)
            out = work / f"seed{seed}" / key
            if overrides is None:
                policy = load_policy(defaults.model.pretrained, defaults.model)
            else:
                common_seed = [*common, f"train.seed={seed}"]
                costs[key][seed] = train_row(out, args.preset, overrides, common_seed, f"seed {seed}: {label}")
                policy = run_policy(*open_run(out))
            evals[key][seed] = evaluate_row(
                out / "eval.json", policy, rewards, names, prompts, inference, args.images_per_prompt, checker
            )
        write_results(args, defaults, rows, evals, costs, started)


def write_results(args, defaults: Config, rows, evals, costs, started) -> None:
    """Aggregate what is finished so far into the JSON, the table and the figure; ``defaults``: the
    configuration every row starts from (the preset with the study's rewards)."""
    names = [spec.name for spec in defaults.rewards]
    seeds = sorted(evals["base"])
    base_scores = np.concatenate([np.array(evals["base"][s]["scores"]) for s in seeds])
    reference = np.quantile(base_scores, REFERENCE_QUANTILE, axis=0)
    table = {}
    for key, label, family, _ in rows:
        done = [s for s in seeds if s in evals[key]]
        if not done:
            continue
        per_seed = {c: [] for c in [*names, "average", "hv_per_prompt", "hv_pooled_origin", "worst_change", *CHECKED]}
        for s in done:
            scores, base = np.array(evals[key][s]["scores"]), np.array(evals["base"][s]["scores"])
            means = scores.mean(0)
            for k, name in enumerate(names):
                per_seed[name].append(float(means[k]))
            per_seed["average"].append(float(means.mean()))
            per_seed["hv_per_prompt"].append(per_prompt_hypervolume(scores, evals[key][s]["prompts"], reference))
            per_seed["hv_pooled_origin"].append(
                hypervolume(scores, np.zeros(len(names)))
            )  # Table 1's old measure, for comparison
            per_seed["worst_change"].append(float((means - base.mean(0)).min()))
            for a in CHECKED:
                per_seed[a].append(float(np.mean(evals[key][s]["checker"][a])))
        entry = {"label": label, "family": family, "seeds": done, **{c: interval(v) for c, v in per_seed.items()}}
        if costs.get(key):
            entry["cost"] = {
                c: float(np.mean([costs[key][s][c] for s in costs[key]]))
                for c in ("iteration_s", "backward_fraction", "wall_time_s")
            }
            entry["code_versions"] = sorted({costs[key][s]["code_version"] for s in costs[key]})
        table[key] = entry
    comparison = compare(table, names)
    # Whether this world has trade-offs among one prompt's images (what selection and advantages see).
    groups = [f"{s}/{p}" for s in seeds for p in evals["base"][s]["prompts"]]
    correlation = within_group_correlation(base_scores, groups)
    result = {
        "code_version": code_version(),
        "budget": {
            "iterations": args.iterations,
            "images_per_iteration": 8 * len(names),
            "rewards": [dataclasses.asdict(spec) for spec in defaults.rewards],
            "learning_rate": args.learning_rate,
            "train_steps": args.train_steps,
            "timestep_fraction": args.timestep_fraction,
            "preset": args.preset or "the default job",
            "model": defaults.model.pretrained,
            "trained": f"T2I {defaults.model.trainable} only, identifiers on, no PEN",
        },
        "eval": {
            "prompts": args.eval_prompts,
            "images_per_prompt": args.images_per_prompt,
            "steps": args.eval_steps,
            "noise_seed": "1234 + training seed",
            "inference": "all identifiers, CFG 5, no expansion (base_plain: no identifiers)",
        },
        "hypervolume_reference": {
            "quantile": REFERENCE_QUANTILE,
            "of": "each reward over the base + identifiers images, pooled over seeds",
            "point": dict(zip(names, reference.tolist())),
        },
        "base_within_prompt_correlation": {
            "of": "the base + identifiers images, each prompt's mean removed per seed, pooled over seeds",
            "rewards": names,
            "matrix": correlation.round(3).tolist(),
        },
        "table": table,
        "comparison": comparison,
        "wall_seconds_this_invocation": round(time.perf_counter() - started, 1),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print_table(table, names, comparison)
    plot(table, out.with_suffix(".png"), f"{defaults.model.pretrained}, {args.iterations} iterations")
    print(f"wrote {out} and {out.with_suffix('.png')}", flush=True)


def compare(table: dict, names: list[str]) -> dict:
    """Best Pareto row vs best scalarisation (each by mean average reward), paired per seed."""
    best = {}
    for family in ("pareto", "scalarisation"):
        rows = [k for k, v in table.items() if v["family"] == family]
        if rows:
            best[family] = max(rows, key=lambda k: table[k]["average"]["mean"])
    if len(best) < 2:
        return {}
    p, s = table[best["pareto"]], table[best["scalarisation"]]
    shared = [seed for seed in p["seeds"] if seed in s["seeds"]]
    diffs, overlap, needed = {}, {}, {}
    for c in (*names, "average", "hv_per_prompt", "hv_pooled_origin", "worst_change", *CHECKED):
        a, b = (np.array([row[c]["per_seed"][row["seeds"].index(seed)] for seed in shared]) for row in (p, s))
        diffs[c] = interval((a - b).tolist())
        (pm, ph), (sm, sh) = mean_ci(a), mean_ci(b)
        overlap[c] = bool(abs(pm - sm) <= ph + sh) if np.isfinite(ph + sh) else None  # the two rows' own 95% intervals
        if len(shared) > 1:  # if later seeds scatter as these did: how many would settle this difference
            sd = lambda x: float(np.std(x, ddof=1))
            needed[c] = {
                "paired": seeds_to_resolve(diffs[c]["mean"], sd(a - b)),
                "separate_intervals": seeds_to_resolve(pm - sm, sd(a) + sd(b)),
            }
    return {
        "best_pareto": best["pareto"],
        "best_scalarisation": best["scalarisation"],
        "seeds": shared,
        "pareto_minus_scalarisation": diffs,
        "intervals_overlap": overlap,
        "seeds_needed": needed,
    }


def print_table(table: dict, names: list[str], comparison: dict) -> None:
    columns = [*names, "average", "hv_per_prompt", "hv_pooled_origin", "worst_change", *CHECKED]
    print("\n| row | " + " | ".join(columns) + " | backward | s/it | seeds |\n|---|" + "---:|" * (len(columns) + 3))
    for entry in table.values():
        cost = entry.get("cost", {})
        cells = [f"{entry[c]['mean']:.4f} ± {entry[c]['ci95']:.4f}" for c in columns]
        print(
            f"| {entry['label']} | "
            + " | ".join(cells)
            + f" | {cost.get('backward_fraction', float('nan')):.2f} | {cost.get('iteration_s', float('nan')):.1f} "
            f"| {len(entry['seeds'])} |"
        )
    if comparison:
        d = comparison["pareto_minus_scalarisation"]
        print(
            f"\nbest Pareto ({comparison['best_pareto']}) − best scalarisation ({comparison['best_scalarisation']}), "
            f"paired over seeds {comparison['seeds']}: "
            + ", ".join(f"{c} {v['mean']:+.4f} ± {v['ci95']:.4f}" for c, v in d.items())
        )
        needed = comparison["seeds_needed"]
        if needed:
            print(
                "seeds that would settle it (paired / separate intervals; - : never): "
                + ", ".join(f"{c} {v['paired'] or '-'} / {v['separate_intervals'] or '-'}" for c, v in needed.items())
            )


def plot(table: dict, path: Path, setting: str) -> None:
    """Mean ± 95% interval over seeds of four headline measures, one panel each; ``setting`` names
    the model and budget in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("average", "average of the rewards"),
        ("hv_per_prompt", "per-prompt hypervolume"),
        ("worst_change", "worst per-reward change vs base + ids"),
        ("colour", "checker: colour accuracy"),
    ]
    colours = {"base": "0.4", "control": "tab:gray", "scalarisation": "tab:blue", "pareto": "tab:red"}
    entries = list(table.values())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.35 * len(entries) + 1.6), sharey=True)
    for ax, (column, title) in zip(axes, panels):
        for y, entry in enumerate(entries):
            mean, half = entry[column]["mean"], entry[column]["ci95"]
            ax.errorbar(mean, y, xerr=0 if np.isnan(half) else half, fmt="o", color=colours[entry["family"]], capsize=3)
        if "base" in table:
            ax.axvline(table["base"][column]["mean"], color="0.6", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(entries)), [e["label"] for e in entries])
    axes[0].invert_yaxis()
    fig.suptitle(f"Objectives on {setting}: mean ± 95% interval over seeds (dashed: base + identifiers)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
