"""How far did a run's PEN drift from the SFT PEN, and does it now contradict the user's prompt?

    python benchmarks/pen_drift.py --run runs/parrot

Expands every held-out mini-world prompt 8 times with the SFT PEN and with the run's last PEN
checkpoint, from the same sampling seed, and counts (a) the prompt attributes (colour, shape,
background) that an expansion names differently and (b) the words whose counts changed most.
Prints both and writes benchmarks/results/pen_drift.json.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from parrot_t2i.checkpoint import resumable_checkpoint
from parrot_t2i.config import PenConfig, load_config
from parrot_t2i.mini.world import parse_prompt, prompt_split
from parrot_t2i.pen import PromptExpander

RESULTS = Path(__file__).parent / "results"


def _expand(
    pen: PromptExpander, prompts: list[str], config: PenConfig
) -> tuple[list[str], dict[str, int], collections.Counter]:
    texts = pen.sample(
        prompts, max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p, seed=0
    ).texts
    contradicted: collections.Counter = collections.Counter()
    words: collections.Counter = collections.Counter()
    for prompt, text in zip(prompts, texts):
        asked, said = parse_prompt(prompt), parse_prompt(text)
        contradicted.update(name for name, value in asked.items() if said.get(name) != value)
        words.update(text.replace(",", " ").split())
    return texts, dict(contradicted), words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a finished or interrupted `parrot train` run folder")
    parser.add_argument("--per-prompt", type=int, default=8)
    args = parser.parse_args()

    run = Path(args.run)
    config = load_config(run / "config.yaml")
    if config.pen.pretrained is None or not config.train.pen:
        raise SystemExit(f"error: {run} did not train a PEN")
    checkpoint, _ = resumable_checkpoint(run)
    _, held_out = prompt_split()
    prompts = [p for p in held_out for _ in range(args.per_prompt)]

    pen = PromptExpander.from_pretrained(config.pen.pretrained, config.pen.template)
    before, contradicted_before, words_before = _expand(pen, prompts, config.pen)
    pen.set_trainable(config.pen.trainable, config.pen.lora_rank, config.pen.lora_alpha)
    pen.load_trainable(checkpoint / "pen", config.pen.trainable)
    after, contradicted_after, words_after = _expand(pen, prompts, config.pen)

    changed = sorted(set(words_before) | set(words_after), key=lambda w: -abs(words_after[w] - words_before[w]))[:10]
    print(f"{len(prompts)} expansions of {len(held_out)} held-out prompts, checkpoint {checkpoint.name}")
    print(
        f"prompt attributes the expansion contradicts: before {sum(contradicted_before.values())} "
        f"{contradicted_before}, "
        f"after {sum(contradicted_after.values())} {contradicted_after}"
    )
    print("| word | before | after |\n|---|---:|---:|")
    for word in changed:
        print(f"| {word} | {words_before[word]} | {words_after[word]} |")
    changed_texts = sum(a != b for a, b in zip(before, after))
    print(f"expansions that differ at all: {changed_texts} of {len(prompts)}")

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pen_drift.json").write_text(
        json.dumps(
            {
                "run": str(run),
                "checkpoint": checkpoint.name,
                "expansions": len(prompts),
                "contradicted": {"before": contradicted_before, "after": contradicted_after},
                "changed_expansions": changed_texts,
                "words": {w: [words_before[w], words_after[w]] for w in changed},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
