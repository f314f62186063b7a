"""What a training run writes to its folder, besides checkpoints: the folder itself (claimed
atomically, never overwritten), ``metrics.jsonl``, sample grids, the tracker logs, the held-out
evaluation before and after, ``summary.md`` / ``summary.json`` and the report.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from torch import Tensor

from .builtin import is_mini_world_model
from .checkpoint import save_checkpoint
from .config import Config
from .errors import ParrotError
from .evaluate import Evaluation, comparison_table, evaluate, inference_from_config
from .images import make_grid, save_grid
from .pareto import lower_quantile_reference, per_prompt_hypervolume
from .provenance import code_version
from .run import Run
from .tracking import log_grid


def history_up_to(run_dir: Path, done: int) -> list[dict[str, float]]:
    """The statistics of the first ``done`` iterations from metrics.jsonl, which is cut back to
    them: iterations after the checkpoint a run resumes from are run again."""
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    kept = [r for r in records if r["iteration"] <= done]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return [{k: v for k, v in r.items() if k != "iteration"} for r in kept]


def write_run_report(
    run: Run, history: list[dict[str, float]], before: Evaluation | None, after: Evaluation | None
) -> None:
    """The `parrot evaluate` report of this run (before vs after on the held-out prompts) in
    ``report/``, with the training reward curves; the curves alone without an evaluation set."""
    from .plots import reward_curves, save
    from .report import Entry, write_report
    from .runs import last_checkpoint

    curves = reward_curves(
        {n: [h.get(f"reward/{n}/mean", float("nan")) for h in history] for n in run.reward_names},
        "training batches: mean reward per iteration",
    )
    save(curves, run.run_dir / "reward_curves.png")
    if before is None or after is None:
        return
    cfg = run.config
    entries = [Entry("before", cfg.model.pretrained, before), Entry("after", str(last_checkpoint(run.run_dir)), after)]
    write_report(
        entries,
        run.run_dir / "report",
        None,
        cfg.eval.file,
        cfg.eval.images_per_prompt,
        extra=[("training reward curves", curves)],
    )


def evaluate_run(run: Run, prompts: list[str], tag: str) -> Evaluation:
    """Score the current weights on held-out prompts with Parrot's inference (the ``eval`` settings)
    from fixed noise; save a grid ``samples/{tag}.png``."""
    cfg = run.config
    result = evaluate(
        run.policy,
        run.rewards,
        run.reward_names,
        prompts,
        images_per_prompt=cfg.eval.images_per_prompt,
        inference=inference_from_config(cfg, run.expander),
        batch_size=cfg.sample.batch_size,
        desc=f"held-out prompts, {tag} training",
    )
    shown = min(len(result.images), 8 * cfg.eval.images_per_prompt)  # eight prompts, one per row
    save_grid(result.images[:shown], run.run_dir / "samples" / f"{tag}.png", ncols=cfg.eval.images_per_prompt)
    return result


def record_iteration(
    run: Run,
    stats: dict[str, float],
    images: Tensor,
    iteration: int,
    total: int,
) -> None:
    """After an iteration: TensorBoard scalars, metrics.jsonl, image grids and periodic checkpoints."""
    cfg, acc = run.config.train, run.accelerator
    acc.log(stats, step=iteration)
    if acc.is_main_process:
        with open(run.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"iteration": iteration, **stats}) + "\n")
        if iteration in (1, total) or (cfg.log_images_every and iteration % cfg.log_images_every == 0):
            log_images(run, images, iteration)
    if cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0 and iteration != total:
        save_checkpoint(run, iteration)


def log_images(run: Run, images: Tensor, iteration: int, limit: int = 16) -> None:
    shown = images[:limit]
    save_grid(shown, run.run_dir / "samples" / f"iter_{iteration:06d}.png")
    log_grid(run.accelerator, shown, make_grid(shown), iteration)


CHECKED = ("shape", "colour", "background")


@functools.cache
def _attribute_checker():
    """The shipped attribute checker, loaded once: a run scores before and after training, and a
    benchmark every row of its table."""
    from .mini import weights_path
    from .mini.nets import AttributeChecker

    return AttributeChecker.from_pretrained(weights_path("checker")).eval()


def checker_accuracy(config: Config, evaluation: Evaluation) -> dict[str, float]:
    """For a mini-world run, the attribute checker's accuracy on the prompts' named attributes: an
    independent judge beside the rewards, which reward hacking cannot fool (it is never trained
    against). Empty for other models (the mini UNet and the mini flow model, or a retrained one, draw the world)."""
    if not is_mini_world_model(config.model.pretrained):
        return {}
    hits = _attribute_checker().prompt_hits(evaluation.images, evaluation.prompts, CHECKED)
    return {f"checker/{a}": sum(v) / len(v) for a, v in hits.items()}


def write_summary(
    run: Run, history: list[dict[str, float]], before: Evaluation | None, after: Evaluation | None, seconds: float
) -> str:
    """``summary.json`` and ``summary.md`` in the run folder; returns the text shown to the user.

    The table compares every reward on the held-out prompts before and after training; without an
    evaluation set it falls back to the training batches' means at the first and last iteration.
    """
    summary: dict = {"iterations": len(history), "wall_time_s": round(seconds, 1), "code_version": code_version()}
    if history:
        summary["mean_iteration_s"] = sum(h["time/iteration"] for h in history) / len(history)
    lines = [f"run folder: {run.run_dir}", f"iterations: {len(history)}, wall time {seconds / 60:.1f} min"]
    if before is not None and after is not None:
        reference = lower_quantile_reference(before.scores)  # as the report: each reward's 10% quantile before training
        before_means, after_means = (
            {
                **e.means(),
                "hv_per_prompt": per_prompt_hypervolume(e.scores, e.prompts, reference),
                **checker_accuracy(run.config, e),
            }
            for e in (before, after)
        )
        summary.update(
            eval_prompts=len(set(before.prompts)),
            eval_images=len(before.prompts),
            before=before_means,
            after=after_means,
            hypervolume_reference=reference.tolist(),
        )
        lines += [
            f"held-out prompts ({len(set(before.prompts))} prompts × {run.config.eval.images_per_prompt} images; "
            "hv_per_prompt: hypervolume of each prompt's images above each reward's 10% quantile before training"
            + (
                "; checker/*: how often the attribute checker, never a reward, sees the prompt's shape, colour, "
                "background"
                if "checker/colour" in before_means
                else ""
            )
            + "):",
            comparison_table(before_means, after_means),
        ]
        if run.expander is not None and run.config.eval.expand:
            step = run.config.eval.images_per_prompt  # the first image of the first four prompts
            examples = [
                {"prompt": p, "before": b, "after": a}
                for p, b, a in zip(before.prompts[::step], before.expansions[::step], after.expansions[::step])
            ][:4]
            summary["expansions"] = examples
            lines += ["expansions (before -> after training):"] + [
                f"  {e['prompt']!r}\n    {e['before']!r}\n -> {e['after']!r}" for e in examples
            ]
    elif len(history) >= 1:
        first, last = history[0], history[-1]
        train_means = {
            n: (first[f"reward/{n}/mean"], last[f"reward/{n}/mean"])
            for n in run.reward_names
            if f"reward/{n}/mean" in first
        }
        summary["training_batches"] = {n: {"first": a, "last": b} for n, (a, b) in train_means.items()}
        lines += ["training batches, first -> last iteration:"] + [
            f"  {n:>24}: {a:.4f} -> {b:.4f}  ({b - a:+.4f})" for n, (a, b) in train_means.items()
        ]
    text = "\n".join(lines)
    (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run.run_dir / "summary.md").write_text(f"# Run summary\n\n{text}\n")
    return text


def on_main_process_shared(make: Callable[[], Path]) -> Path:
    """``make()`` on the main process, its result on every process (one run folder, not one each)."""
    state = PartialState()
    made = [make() if state.is_main_process else None]
    return broadcast_object_list(made)[0] if state.num_processes > 1 else made[0]


CLAIM = ".parrot-run"  # created exclusively in a run folder: the folder belongs to that run


def claim_run_dir(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... if it already holds anything: never overwrite earlier
    work. The folder is claimed atomically (an exclusively created marker file), so two runs
    started into one ``output_dir`` at once get two folders."""
    candidate, n = path, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            if not any(entry.name != CLAIM for entry in candidate.iterdir()):
                with open(candidate / CLAIM, "x"):
                    return candidate
        except FileExistsError:  # another run claimed it first (or a file has that name)
            pass
        except OSError as err:
            raise ParrotError(f"cannot create the run folder {str(candidate)!r}: {err.strerror or err}") from None
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
