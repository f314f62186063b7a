"""The Parrot RL loop (paper Algorithm 1, batched): expand → sample → score → select → update → log.

``train_iteration`` is the whole algorithm, read top to bottom; ``train`` wraps it with accelerate,
the run folder, progress, the held-out evaluation before and after, and checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, resumable_checkpoint, save_checkpoint
from .config import Config, save_config
from .diffusion import (
    CFG,
    Conditioning,
    Trajectory,
    gaussian_kl_same_std,
    transition_log_prob,
)
from .distributed import gather_rows, process_rows, sum_gradients
from .errors import ParrotError
from .identifiers import with_identifiers
from .objectives import (
    Selection,
    pen_policy_gradient_loss,
    policy_gradient_loss,
)
from .pen import Expansions, sampled_log_probs
from .prompts import read_prompt_file
from .rewards import RewardError, check_reward, score_all
from .run import Run, holding, setup_run
from .run_folder import (
    claim_run_dir,
    evaluate_run,
    history_up_to,
    on_main_process_shared,
    record_iteration,
    write_run_report,
    write_summary,
)
from .tracking import start as start_trackers

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- prompts


@dataclass
class PromptBatch:
    """The B = prompts × N samples of one iteration, in sampling order."""

    originals: list[str]  # (B,) the user prompt c, what rewards score against
    groups: Tensor  # (B,) long: prompt id, the Pareto selection group
    reward_index: Tensor  # (B,) long: k, the reward sample i is credited with (its identifier)
    expansions: list[str]  # (B,) ĉ, the PEN's expansion of c (c itself without a PEN)
    conditioned: list[str]  # (B,) c_k = identifier_k + " " + ĉ, what the T2I model sees
    pen_samples: Expansions | None = None  # ĉ's tokens and log-probs, for the PEN update


def assign_rewards(
    prompts: list[str], num_rewards: int, images_per_prompt: int, group_by: str = "prompt"
) -> tuple[list[str], Tensor, Tensor]:
    """Each sample's prompt, selection group and credited reward: (originals, groups, reward_index).

    "prompt": N samples per prompt, one group per prompt, sample j credited to k = j mod K.
    "prompt_reward" (paper Algorithm 1): N samples per (prompt, k), one group per pair, g = prompt·K + k.
    """
    if group_by == "prompt_reward":
        groups = torch.arange(len(prompts) * num_rewards).repeat_interleave(images_per_prompt)
        return [prompts[g // num_rewards] for g in groups.tolist()], groups, groups.remainder(num_rewards)
    originals = [p for p in prompts for _ in range(images_per_prompt)]
    groups = torch.arange(len(prompts)).repeat_interleave(images_per_prompt)
    reward_index = torch.arange(images_per_prompt).remainder(num_rewards).repeat(len(prompts))
    return originals, groups, reward_index


def condition(texts: list[str], reward_index: Tensor, identifiers: list[str] | None) -> list[str]:
    """identifier_{k_i} + " " + text_i (paper §3.3); the texts unchanged without identifiers."""
    if identifiers is None:
        return list(texts)
    return [with_identifiers(text, [identifiers[k]]) for k, text in zip(reward_index.tolist(), texts)]


# ----------------------------------------------------------------------------- one iteration


@dataclass
class IterationResult:
    """One iteration's samples (this process's) and decisions (the global batch's)."""

    batch: PromptBatch  # this process's B samples
    images: Tensor  # (B, 3, H, W) in [0, 1], this process's
    rewards: Tensor  # (world · B, K), every process's rewards in process order
    selection: Selection  # over the world · B samples
    weights: Tensor  # (B,) this process's policy-gradient weights: its rows of selection.weights
    stats: dict[str, float]


def sde_window(
    iteration: int, num_steps: int, size: int | None, shift_every: int, last_deterministic: bool = False
) -> range:
    """The steps that are stochastic and trained on iteration ``iteration`` (0-based): all of them
    without a window; else MixGRPO's progressive window of ``size`` steps, starting at step 0 and
    moving one step later every ``shift_every`` iterations, back to 0 once it has reached the end.

    ``last_deterministic``: the sampler's last step has no noise whatever the setting (CPS lands on
    σ' = 0 exactly), so it has no density: it is left out, Euler in sampling (the same state) and
    never trained (its gradient would be zero after a full forward and backward)."""
    if last_deterministic:
        num_steps -= 1
    if size is None or size >= num_steps:
        return range(num_steps)
    start = (iteration // shift_every) % (num_steps - size + 1)
    return range(start, start + size)


def train_iteration(run: Run, train_t2i: bool = True, train_pen: bool = True, iteration: int = 0) -> IterationResult:
    """One Parrot iteration. Every step is a plain function call on plain data.

    ``train_t2i`` / ``train_pen`` choose which networks this iteration updates (both, in Parrot);
    a network the run does not train is never updated. ``iteration`` (0-based) places the SDE
    window (``sample.sde_window``).
    """
    cfg, acc = run.config, run.accelerator
    window = sde_window(
        iteration,
        cfg.sample.num_inference_steps,
        cfg.sample.sde_window,
        cfg.sample.sde_window_shift_every,
        run.policy.last_step_deterministic,
    )
    started = time.perf_counter()

    # 1. Prompts: draw the global batch's prompts (same on every process), keep this process's
    #    slice, N samples each, each credited to one reward. Group ids are global prompt slots.
    per_process = cfg.sample.prompts_per_iteration
    chosen = torch.randint(len(run.prompts), (per_process * acc.num_processes,), generator=run.generator)[
        process_rows(acc, per_process)
    ]
    originals, groups, reward_index = assign_rewards(
        [run.prompts[i] for i in chosen], len(run.rewards), cfg.sample.images_per_prompt, cfg.sample.group_by
    )
    groups = groups + acc.process_index * (int(groups.max()) + 1)  # every process has as many groups

    # 2. Expand: ĉ ~ p_φ(·|c) per sample, then c_k = identifier_k + " " + ĉ.
    batch = expand_batch(run, originals, groups, reward_index)
    expanded = time.perf_counter()

    # 3. Sample: stochastic trajectories (in the window) with per-step log-probs, then decode.
    cond = run.policy.encode(batch.conditioned)
    trajectory, images = sample_batch(run, cond, window)
    sampled = time.perf_counter()

    # 4. Score every image with all K rewards, against the original prompt; gather the global batch.
    local_rewards = score_all(run.rewards, images, batch.originals)  # (B, K)
    rewards, all_groups, all_reward_index = (
        gather_rows(acc, t.to(acc.device)).cpu() for t in (local_rewards, batch.groups, batch.reward_index)
    )
    invalid = int((~torch.isfinite(rewards).all(1)).sum())
    if invalid:
        logger.warning("%d sample(s) had a non-finite reward and were excluded from this update", invalid)
    scored = time.perf_counter()

    # 5. Select on the global batch: Pareto set and per-sample weights (Eq. 4 or a baseline
    #    objective); every process computes the same selection and keeps its own rows' weights.
    selection = run.objective(rewards, all_groups, all_reward_index)
    weights = selection.weights[process_rows(acc, len(batch.originals))].to(acc.device)
    any_selected = bool(selection.weights.ne(0).any())

    # 6. T2I update over the timesteps of the selected samples only.
    stats: dict[str, float] = {}
    if train_t2i and run.optimizer is not None and any_selected:
        num_selected = int(selection.weights.ne(0).sum())
        stats.update(update_t2i(run, trajectory, cond, batch.conditioned, weights, num_selected, window))
        stats["lr"] = run.optimizer.param_groups[0]["lr"]
    updated = time.perf_counter()

    # 7. PEN update: REINFORCE on the expansion tokens with the same per-sample weights.
    if (
        train_pen
        and run.pen_optimizer is not None
        and batch.pen_samples is not None
        and (any_selected or cfg.pen.kl_coef > 0)
    ):
        stats.update(update_pen(run, batch.pen_samples, weights))
    pen_updated = time.perf_counter()

    # 8. Statistics for the progress bar, TensorBoard and metrics.jsonl.
    stats.update(
        {
            "selected": float(selection.selected.sum()),
            "selected_fraction": float(selection.selected.float().mean()),
            "invalid_samples": float(invalid),
            "time/expand": expanded - started,
            "time/sample": sampled - expanded,
            "time/reward": scored - sampled,
            "time/update": updated - scored,
            "time/pen_update": pen_updated - updated,
            "time/iteration": pen_updated - started,
        }
    )
    if batch.pen_samples is not None:
        stats["pen/expansion_tokens"] = float(batch.pen_samples.mask.sum(1).float().mean())
    for k, name in enumerate(run.reward_names):  # over the global batch
        column = rewards[selection.valid, k]
        if len(column):
            for stat, value in [
                ("mean", column.mean()),
                ("std", column.std(unbiased=False)),
                ("min", column.min()),
                ("max", column.max()),
            ]:
                stats[f"reward/{name}/{stat}"] = value.item()
    return IterationResult(batch, images, rewards, selection, weights, stats)


def expand_batch(run: Run, originals: list[str], groups: Tensor, reward_index: Tensor) -> PromptBatch:
    """Each sample's expansion (sampled by the PEN, with token log-probs) and conditioning text.

    Expansions are shortened so that identifier + expansion fits the T2I text encoder: the PEN
    is only credited for tokens the T2I model saw.
    """
    pen_cfg = run.config.pen
    if run.expander is None:
        return PromptBatch(
            originals, groups, reward_index, list(originals), condition(originals, reward_index, run.identifiers)
        )
    seed = int(
        torch.randint(2**31 - 1, (1,), generator=run.noise_generator, device=run.noise_generator.device)
    )  # per process
    # One expansion per sample, or per group when a group shares its (prompt, k) (Algorithm 1).
    shared = run.config.sample.group_by == "prompt_reward"
    first = (
        torch.cat([torch.ones(1, dtype=torch.bool), groups[1:] != groups[:-1]])
        if shared
        else torch.ones(len(groups), dtype=torch.bool)
    )
    rows = first.nonzero().squeeze(1)
    sampled = run.expander.sample(
        [originals[r] for r in rows.tolist()],
        max_new_tokens=pen_cfg.max_new_tokens,
        temperature=pen_cfg.temperature,
        top_p=pen_cfg.top_p,
        seed=seed,
    )
    fitted = run.expander.fit_to(
        sampled,
        lambda row, text: run.policy.fits(
            condition([text], reward_index[rows[row] : rows[row] + 1], run.identifiers)[0]
        ),
    )
    samples = fitted[first.cumsum(0) - 1] if shared else fitted  # each sample gets its group's expansion
    return PromptBatch(
        originals, groups, reward_index, samples.texts, condition(samples.texts, reward_index, run.identifiers), samples
    )


def sample_batch(run: Run, cond: Conditioning, window: range) -> tuple[Trajectory, Tensor]:
    """Sample in chunks of ``sample.batch_size`` and concatenate (B, T+1, ...) trajectories;
    stochastic on the steps of ``window``."""
    cfg = run.config.sample
    parts, images = [], []
    with run.accelerator.autocast():
        for idx in torch.arange(len(cond)).split(cfg.batch_size):
            part = run.policy.sample(
                cond[idx],
                run.uncond.expand(len(idx)),
                CFG(cfg.guidance_scale),
                generator=run.noise_generator,
                stochastic=window,
            )
            parts.append(part)
            images.append(run.policy.decode(part.latents[:, -1]))
    trajectory = Trajectory(
        torch.cat([p.latents for p in parts]), parts[0].timesteps, torch.cat([p.log_probs for p in parts])
    )
    return trajectory, torch.cat(images)


def update_t2i(
    run: Run,
    trajectory: Trajectory,
    cond: Conditioning,
    texts: list[str],
    weights: Tensor,
    num_selected: int,
    window: range,
) -> dict[str, float]:
    """Accumulate the policy gradient over the (sample, timestep) pairs of non-zero-weight samples,
    sum it across processes, then step once (per inner epoch).

    Zero-weight samples (dominated, in Parrot) never reach a forward or backward pass. The pairs
    are packed into full UNet calls of ``train.batch_size`` rows, whatever their timesteps (the
    UNet and the DDIM step take one timestep per row): P selected samples × T steps cost
    ⌈P·T / batch_size⌉ calls, not T·⌈P / batch_size⌉ part-filled ones. Each UNet call has a fixed
    cost, so this is what makes skipping dominated samples pay in proportion (docs/PERFORMANCE.md).
    Only the steps of ``window`` (all T without ``sample.sde_window``, less a noise-free last step)
    are trained: the others were deterministic. With ``timestep_fraction < 1`` each sample trains on
    a random subset of them, scaled by |window| / steps so the loss stays an unbiased estimate of the
    sum over the window. With
    ``train.kl_coef`` β > 0 each pair also carries β · KL(p_θ ‖ p_ref) / ``num_selected`` (the
    global count of non-zero weights), the reference's mean computed without gradients.
    ``texts`` (the conditioning prompts) are encoded again, with gradients, when the identifiers'
    embeddings are learnt; otherwise the sampling-time ``cond`` is reused.
    """
    cfg, acc = run.config, run.accelerator
    active = weights.nonzero().squeeze(1)  # (P,) on this process; may be empty while peers have some
    num_steps = len(window)
    steps_trained = max(1, math.ceil(cfg.train.timestep_fraction * num_steps))
    scale = num_steps / steps_trained
    kl_coef = cfg.train.kl_coef
    total_loss, total_kl, grad_norm = 0.0, 0.0, 0.0
    run.policy.train()
    for _ in range(cfg.train.num_inner_epochs):
        if steps_trained < num_steps:  # a random subset of steps per sample (one permutation per row)
            gen = run.noise_generator
            order = torch.rand(len(active), num_steps, generator=gen, device=gen.device).argsort(1)[:, :steps_trained]
        else:
            order = torch.arange(num_steps).expand(len(active), num_steps)
        order = (order + window.start).to(trajectory.latents.device)  # (P, steps_trained) step indices per sample
        # Every (sample, step) pair, step-major, then cut into chunks of train.batch_size rows.
        pair_rows = torch.arange(len(active), device=active.device).repeat(steps_trained)
        pair_steps = order.T.reshape(-1)
        for chunk in _split(torch.arange(len(pair_rows), device=active.device), cfg.train.batch_size):
            idx, step = active[pair_rows[chunk]], pair_steps[chunk]
            with acc.autocast():
                # The reference first: swapping weights in place after the forward pass would break backward.
                if kl_coef > 0:
                    with torch.no_grad(), reference_weights(run):
                        ref_mean, _ = _transition(run, trajectory, cond, texts, idx, step)
                mean, std = _transition(run, trajectory, cond, texts, idx, step)
                log_prob = transition_log_prob(trajectory.latents[idx, step + 1], mean, std)
                loss = scale * policy_gradient_loss(
                    log_prob, trajectory.log_probs[idx, step], weights[idx], cfg.train.clip_range
                )
                if kl_coef > 0:
                    kl = scale * gaussian_kl_same_std(mean, ref_mean, std).sum() / num_selected
                    loss = loss + kl_coef * kl
                    total_kl += kl.item()
            acc.backward(loss)
            total_loss += loss.item()
        sum_gradients(acc, run.params)
        grad_norm = float(acc.clip_grad_norm_(run.params, cfg.train.max_grad_norm))
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    run.policy.train(False)
    epochs = cfg.train.num_inner_epochs
    totals = acc.reduce(torch.tensor([total_loss, total_kl], device=acc.device), "sum")  # the global batch's
    stats = {"loss": float(totals[0]) / epochs, "grad_norm": grad_norm}
    if kl_coef > 0:
        stats["kl"] = float(totals[1]) / epochs  # Σ over the selected samples' steps of KL, / |selected|
    return stats


def _transition(
    run: Run, trajectory: Trajectory, cond: Conditioning, texts: list[str], idx: Tensor, step: Tensor
) -> tuple[Tensor, Tensor]:
    """(mean, std) of p_θ(x_{t-1} | x_t) for the (sample, step) pairs ``idx``, ``step`` of one chunk."""
    if run.policy.identifiers is not None:  # learnt identifiers: the conditioning depends on θ too
        chunk_cond = run.policy.encode([texts[i] for i in idx.tolist()], grad=torch.is_grad_enabled())
    else:
        chunk_cond = cond[idx]
    return run.policy.step_mean_std(
        trajectory.latents[idx, step],
        trajectory.timesteps[step],
        chunk_cond,
        run.uncond.expand(len(idx)),
        CFG(run.config.sample.guidance_scale),
    )


@contextmanager
def reference_weights(run: Run) -> Iterator[None]:
    """The T2I model as it was before RL: LoRA adapters switched off, and every other trained
    tensor's original value swapped in (the trained ones back afterwards)."""
    with holding(run.reference_params, run.reference):
        if run.config.model.trainable != "lora":
            yield
            return
        with run.policy.adapters_disabled():
            yield


def update_pen(run: Run, samples: Expansions, weights: Tensor) -> dict[str, float]:
    """One optimiser step on −Σ_i w_i · log p_φ(ĉ_i | c_i) (+ kl_coef · KL to the SFT PEN).

    Rows with weight 0 are skipped unless the KL term needs them. The PEN stays in eval mode, so
    dropout does not make the recomputed log-probs differ from the sampled ones.
    """
    cfg, acc = run.config, run.accelerator
    kl_coef, temperature = cfg.pen.kl_coef, cfg.pen.temperature
    rows = torch.arange(len(weights), device=weights.device) if kl_coef > 0 else weights.nonzero().squeeze(1)
    total_loss, total_kl = 0.0, 0.0  # rows may be empty here while other processes have some
    for chunk in _split(rows, cfg.train.batch_size):
        part = samples[chunk.cpu()]
        distributions = run.expander.token_distributions(part, temperature)
        loss = pen_policy_gradient_loss(
            sampled_log_probs(distributions, part.ids, part.mask), part.mask, weights[chunk]
        )
        if kl_coef > 0:
            kl = run.expander.kl_to_sft(part, distributions, temperature).sum() / (
                len(rows) * acc.num_processes
            )  # mean over the global batch
            loss = loss + kl_coef * kl
            total_kl += kl.item()
        acc.backward(loss)
        total_loss += loss.item()
    sum_gradients(acc, run.pen_params)
    grad_norm = float(acc.clip_grad_norm_(run.pen_params, cfg.train.max_grad_norm))
    run.pen_optimizer.step()
    run.pen_optimizer.zero_grad(set_to_none=True)
    stats = {"pen/loss": total_loss, "pen/grad_norm": grad_norm}
    if kl_coef > 0:
        stats["pen/kl"] = total_kl
    totals = acc.reduce(torch.tensor(list(stats.values()), device=acc.device), "sum")  # the global batch's loss and KL
    stats.update({k: float(v) for k, v in zip(stats, totals) if k != "pen/grad_norm"})
    return stats


def _split(rows: Tensor, size: int) -> tuple[Tensor, ...]:
    """``rows.split(size)``, but no chunk at all for no rows (``split`` gives one empty chunk)."""
    return rows.split(size) if len(rows) else ()


# ----------------------------------------------------------------------------- the loop


def train(config: Config, resume: Path | None = None) -> Path:
    """Run ``config.train.num_iterations`` iterations; returns the run folder.

    ``resume``: a run folder whose newest checkpoint with a resume state is continued; on CPU
    the result is bit-identical to a run that was never interrupted.
    """
    held_out = read_prompt_file(config.eval.file, "eval.file") if config.eval.file else None
    for spec in config.rewards:  # a typo fails before a run folder is claimed for it
        check_reward(spec)
    total = config.train.num_iterations
    run_dir = (
        resume if resume is not None else on_main_process_shared(lambda: claim_run_dir(Path(config.train.output_dir)))
    )
    checkpoint = None
    if resume is not None:
        checkpoint, done = resumable_checkpoint(run_dir)
        if done >= total:
            raise ParrotError(
                f"{run_dir} already finished its {total} iterations; to train longer, resume with --set "
                f"train.num_iterations=N (N > {config.train.num_iterations})"
            )
    run = setup_run(config, run_dir)
    acc = run.accelerator
    if acc.is_main_process:
        save_config(config, run_dir / "config.yaml")
    start_trackers(acc, config, run_dir)
    started = time.perf_counter()
    before = evaluate_run(run, held_out, "before") if held_out and acc.is_main_process else None
    done = 0
    if checkpoint is not None:
        done = load_checkpoint(run, checkpoint)
        logger.info("resuming %s from %s (iteration %d of %d)", run_dir, checkpoint.name, done, total)
    history = history_up_to(run_dir, done) if acc.is_main_process else []
    try:
        with tqdm(
            total=total, initial=done, desc="parrot", unit="it", disable=not acc.is_main_process, dynamic_ncols=True
        ) as bar:
            t = config.train
            bar.set_description("parrot" if t.t2i and t.pen else ("T2I only" if t.t2i else "PEN only"))
            while done < total:
                result = train_iteration(run, t.t2i, t.pen, iteration=done)
                done += 1  # the weights now are those of this iteration
                history.append(result.stats)
                bar.update()
                bar.set_postfix(
                    {
                        "|P|": int(result.stats["selected"]),
                        **{n: f"{result.stats.get(f'reward/{n}/mean', float('nan')):.3f}" for n in run.reward_names},
                    }
                )
                record_iteration(run, result.stats, result.images, done, total)
    except KeyboardInterrupt:  # keep what was trained so far
        if done:
            logger.warning(
                "interrupted: saving iteration %d to %s; continue with `parrot train --resume %s`",
                done,
                run_dir / "checkpoints",
                run_dir,
            )
            save_checkpoint(run, done)
        raise
    except RewardError as err:  # a reward failed: keep what was trained, then say where
        kept = (
            f"iterations 1-{done} are saved in {save_checkpoint(run, done)}; continue with `parrot "
            f"train --resume {run_dir}`"
            if done
            else "nothing was trained yet"
        )
        raise RewardError(f"{err} (on iteration {done + 1}); {kept}") from err.__cause__
    save_checkpoint(run, total)
    after = evaluate_run(run, held_out, "after") if before is not None else None
    acc.end_training()
    if acc.is_main_process:
        print(write_summary(run, history, before, after, time.perf_counter() - started))
        write_run_report(run, history, before, after)
    return run_dir
