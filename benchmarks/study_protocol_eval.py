"""Score any run under the objective study's protocol, against the study's base + identifiers row.

    python benchmarks/study_protocol_eval.py --run runs/default-candidate --seed 0

The protocol is `pareto_study.py`'s: the 30 held-out prompts × 4 images, all four identifiers,
CFG 5, no expansion, no guidance rescale, deterministic DDIM with 20 steps from the noise of
seed 1234 + SEED. "Before" is the study's cached evaluation of the base model for that seed
(RUN_DIR/seedSEED/base/eval.json under --work-dir; run the study first). The per-prompt
hypervolume uses the study's reference point. Writes benchmarks/results/study_protocol_RUN.json.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from pareto_study import CHECKED, RESULTS, evaluate_row

from parrot_t2i.config import load_config
from parrot_t2i.evaluate import inference_from_config
from parrot_t2i.mini import weights_path
from parrot_t2i.mini.nets import AttributeChecker
from parrot_t2i.pareto import per_prompt_hypervolume
from parrot_t2i.prompts import read_prompt_file
from parrot_t2i.provenance import code_version
from parrot_t2i.rewards import build_rewards
from parrot_t2i.runs import open_run, run_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--seed", type=int, default=0, help="the study seed whose base row and noise to use")
    parser.add_argument("--work-dir", default="runs/pareto_study")
    args = parser.parse_args()
    defaults = load_config(None)
    names = [spec.name for spec in defaults.rewards]
    study = json.loads((RESULTS / "pareto_study.json").read_text())
    reference = np.array(list(study["hypervolume_reference"]["point"].values()))
    protocol = dict(original_guidance=False, guidance_scale=5.0, guidance_rescale=0.0, num_inference_steps=20)
    inference = replace(inference_from_config(defaults, None), **protocol, seed=1234 + args.seed)
    config, checkpoint = open_run(args.run)
    after = evaluate_row(
        Path(args.run) / "study_protocol_eval.json",
        run_policy(config, checkpoint),
        build_rewards(defaults.rewards),
        names,
        read_prompt_file("builtin:mini-heldout", "held-out prompts"),
        inference,
        4,
        AttributeChecker.from_pretrained(weights_path("checker")).eval(),
    )
    before = json.loads((Path(args.work_dir) / f"seed{args.seed}" / "base" / "eval.json").read_text())
    table = {}
    for when, record in (("before", before), ("after", after)):
        scores = np.array(record["scores"])
        row = dict(zip(names, scores.mean(0).tolist()))
        row["average"] = float(scores.mean())
        row["hv_per_prompt"] = per_prompt_hypervolume(scores, record["prompts"], reference)
        row.update({a: float(np.mean(record["checker"][a])) for a in CHECKED})
        table[when] = row
    print("| measure | before | after | change |\n|---|---:|---:|---:|")
    for key, value in table["before"].items():
        print(f"| {key} | {value:.4f} | {table['after'][key]:.4f} | {table['after'][key] - value:+.4f} |")
    out = RESULTS / f"study_protocol_{Path(args.run).name}.json"
    record = {"code_version": code_version(), "run": args.run, "seed": args.seed, "protocol": protocol, **table}
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
