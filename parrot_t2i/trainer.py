"""The Parrot RL loop (paper Algorithm 1, batched): sample → score → select → update → log.

``train_iteration`` is the whole algorithm, read top to bottom; ``train`` wraps it with accelerate,
the run folder, progress and checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import Tensor
from tqdm.auto import tqdm

from .config import Config, ConfigError, save_config
from .diffusion import Conditioning, Trajectory, sample_trajectory, step_log_prob
from .errors import ParrotError
from .evaluate import Evaluation, comparison_table, evaluate, identifier_prefix
from .images import save_grid
from .objectives import Objective, Selection, policy_gradient_loss
from .prompts import read_prompt_file
from .rewards import Reward, build_reward
from .t2i import T2IPolicy

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- prompts


@dataclass
class PromptBatch:
    """The B = prompts × N samples of one iteration, in sampling order."""

    originals: list[str]  # (B,) the user prompt c, what rewards score against
    conditioned: list[str]  # (B,) c_k = "<reward k> " + c, what the T2I model sees
    groups: Tensor  # (B,) long: prompt id, the Pareto selection group
    reward_index: Tensor  # (B,) long: k, whose identifier conditioned the sample


def expand_prompts(prompts: list[str], num_rewards: int, images_per_prompt: int, identifier_template: str | None) -> PromptBatch:
    """N samples per prompt, assigned round-robin to the K rewards (sample j of a prompt gets k = j mod K).

    With ``identifier_template`` (e.g. "<reward {k}>") each sample's prompt is prefixed with its
    reward's identifier (paper §3.3); without it, all samples of a prompt share the plain prompt.
    """
    originals, conditioned, groups, index = [], [], [], []
    for g, prompt in enumerate(prompts):
        for j in range(images_per_prompt):
            k = j % num_rewards
            originals.append(prompt)
            conditioned.append(f"{identifier_template.format(k=k + 1)} {prompt}" if identifier_template else prompt)
            groups.append(g)
            index.append(k)
    return PromptBatch(originals, conditioned, torch.tensor(groups), torch.tensor(index))


def load_prompts(config: Config) -> list[str]:
    """The training prompts: inline ``prompts.prompts`` if given, else ``prompts.file``."""
    inline = [p.strip() for p in config.prompts.prompts if p.strip()]
    if inline:
        return inline
    if not config.prompts.file:
        raise ConfigError("no training prompts: set prompts.prompts or prompts.file")
    return read_prompt_file(config.prompts.file, "prompts.file")


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything one training run holds between iterations."""

    config: Config
    accelerator: Accelerator
    policy: T2IPolicy
    unet: torch.nn.Module  # policy.unet as prepared by accelerate (DDP-wrapped when distributed)
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    rewards: list[Reward]
    objective: Objective
    prompts: list[str]
    uncond: Conditioning  # (1, L, D) embedding of the empty negative prompt, encoded once
    generator: torch.Generator  # same seed on every process: prompt choice and timestep order
    noise_generator: torch.Generator  # per process: the sampler's noise
    run_dir: Path

    @property
    def reward_names(self) -> list[str]:
        """Names as configured: the order of the reward columns everywhere."""
        return [spec.name for spec in self.config.rewards]


def setup_run(config: Config, run_dir: Path | None = None) -> Run:
    accelerator = Accelerator(mixed_precision=config.train.mixed_precision, log_with="tensorboard", project_dir=str(run_dir) if run_dir else None)
    set_seed(config.train.seed)
    rewards = [build_reward(spec) for spec in config.rewards]
    names = [spec.name for spec in config.rewards]
    objective = Objective(config.objective, names)
    prompts = load_prompts(config)
    policy = T2IPolicy.from_pretrained(config.model.pretrained).to(accelerator.device)
    policy.scheduler.set_timesteps(config.sample.num_inference_steps, device=accelerator.device)
    params = policy.set_trainable(config.model.trainable, config.model.lora_rank, config.model.lora_alpha)
    t = config.train
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.adam_weight_decay, eps=t.adam_epsilon)
    unet, optimizer = accelerator.prepare(policy.unet, optimizer)
    noise_generator = torch.Generator(accelerator.device).manual_seed(t.seed * 1009 + accelerator.process_index)
    logger.info("rewards: %s; trainable parameters: %d", names, sum(p.numel() for p in params))
    return Run(
        config=config,
        accelerator=accelerator,
        policy=policy,
        unet=unet,
        params=params,
        optimizer=optimizer,
        rewards=rewards,
        objective=objective,
        prompts=prompts,
        uncond=policy.encode([""]),
        generator=torch.Generator().manual_seed(t.seed),
        noise_generator=noise_generator,
        run_dir=run_dir or Path(tempfile.mkdtemp(prefix="parrot-")),
    )


# ----------------------------------------------------------------------------- one iteration


@dataclass
class IterationResult:
    batch: PromptBatch
    images: Tensor  # (B, 3, H, W) in [0, 1]
    rewards: Tensor  # (B, K)
    selection: Selection
    stats: dict[str, float]


def train_iteration(run: Run) -> IterationResult:
    """One Parrot iteration. Every step is a plain function call on plain data."""
    cfg, acc = run.config, run.accelerator
    started = time.perf_counter()

    # 1. Prompts: draw this iteration's prompts, N samples each, with reward identifiers.
    chosen = torch.randint(len(run.prompts), (cfg.sample.prompts_per_iteration,), generator=run.generator)
    template = cfg.prompts.identifier_template if cfg.prompts.identifiers else None
    batch = expand_prompts([run.prompts[i] for i in chosen], len(run.rewards), cfg.sample.images_per_prompt, template)

    # 2. Sample: stochastic DDIM trajectories with per-step log-probs, then decode.
    cond = run.policy.encode(batch.conditioned)
    trajectory, images = sample_batch(run, cond)
    sampled = time.perf_counter()

    # 3. Score every image with all K rewards, against the original prompt.
    rewards = torch.stack([reward(images, batch.originals).to(images.device).float() for reward in run.rewards], 1)  # (B, K)
    invalid = int((~torch.isfinite(rewards).all(1)).sum())
    if invalid:
        logger.warning("%d sample(s) had a non-finite reward and were excluded from this update", invalid)
    scored = time.perf_counter()

    # 4. Select: Pareto set and per-sample weights (Eq. 4 or a baseline objective).
    selection = run.objective(rewards.cpu(), batch.groups, batch.reward_index)

    # 5. T2I update over the timesteps of the selected samples only.
    loss, grad_norm = update_t2i(run, trajectory, cond, selection.weights.to(acc.device))
    updated = time.perf_counter()

    # 6. Statistics for the progress bar, TensorBoard and metrics.jsonl.
    stats = {
        "loss": loss,
        "grad_norm": grad_norm,
        "lr": run.optimizer.param_groups[0]["lr"],
        "selected": float(selection.selected.sum()),
        "selected_fraction": float(selection.selected.float().mean()),
        "invalid_samples": float(invalid),
        "time/sample": sampled - started,
        "time/reward": scored - sampled,
        "time/update": updated - scored,
        "time/iteration": updated - started,
    }
    for k, name in enumerate(run.reward_names):
        column = rewards[selection.valid.to(rewards.device), k]
        if len(column):
            for stat, value in [("mean", column.mean()), ("std", column.std(unbiased=False)), ("min", column.min()), ("max", column.max())]:
                stats[f"reward/{name}/{stat}"] = value.item()
    return IterationResult(batch, images, rewards, selection, stats)


def sample_batch(run: Run, cond: Conditioning) -> tuple[Trajectory, Tensor]:
    """Sample in chunks of ``sample.batch_size`` and concatenate (B, T+1, ...) trajectories."""
    cfg = run.config.sample
    shape = run.policy.latent_shape()
    parts, images = [], []
    with run.accelerator.autocast():
        for idx in torch.arange(len(cond)).split(cfg.batch_size):
            part = sample_trajectory(run.unet, run.policy.scheduler, cond[idx], run.uncond.expand(len(idx)), shape, cfg.guidance_scale, cfg.eta, run.noise_generator)
            parts.append(part)
            images.append(run.policy.decode(part.latents[:, -1]))
    trajectory = Trajectory(torch.cat([p.latents for p in parts]), parts[0].timesteps, torch.cat([p.log_probs for p in parts]))
    return trajectory, torch.cat(images)


def update_t2i(run: Run, trajectory: Trajectory, cond: Conditioning, weights: Tensor) -> tuple[float, float]:
    """Accumulate the policy gradient over timesteps × chunks of non-zero-weight samples, then step once.

    Zero-weight samples (dominated, in Parrot) never reach a forward or backward pass. With
    ``timestep_fraction < 1`` each sample trains on a random subset of its steps, scaled by
    T / steps so the loss stays an unbiased estimate of the sum over all T steps.
    """
    cfg, acc = run.config, run.accelerator
    active = weights.nonzero().squeeze(1)  # (P,)
    num_steps = trajectory.log_probs.shape[1]
    steps_trained = max(1, math.ceil(cfg.train.timestep_fraction * num_steps))
    scale = num_steps / steps_trained
    total_loss, grad_norm = 0.0, 0.0
    run.unet.train()
    for _ in range(cfg.train.num_inner_epochs):
        if len(active) == 0:
            break
        if steps_trained < num_steps:
            order = torch.stack([torch.randperm(num_steps, generator=run.generator)[:steps_trained] for _ in active])
        else:
            order = torch.arange(num_steps).expand(len(active), num_steps)
        order = order.to(trajectory.latents.device)  # (P, steps_trained) step indices per sample
        chunks = [(j, rows) for j in range(steps_trained) for rows in torch.arange(len(active), device=active.device).split(cfg.train.batch_size)]
        for c, (j, rows) in enumerate(chunks):
            idx, step = active[rows], order[rows, j]
            sync = c == len(chunks) - 1  # all-reduce gradients once, after the last chunk
            with acc.autocast(), (nullcontext() if sync else acc.no_sync(run.unet)):
                log_prob = step_log_prob(
                    run.unet,
                    run.policy.scheduler,
                    trajectory.latents[idx, step],
                    trajectory.latents[idx, step + 1],
                    trajectory.timesteps[step],
                    cond[idx],
                    run.uncond.expand(len(idx)),
                    cfg.sample.guidance_scale,
                    cfg.sample.eta,
                )
                loss = scale * policy_gradient_loss(log_prob, trajectory.log_probs[idx, step], weights[idx], cfg.train.clip_range)
                acc.backward(loss)
            total_loss += loss.item()
        grad_norm = float(acc.clip_grad_norm_(run.params, cfg.train.max_grad_norm))
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    run.unet.eval()
    return total_loss / cfg.train.num_inner_epochs, grad_norm


# ----------------------------------------------------------------------------- the loop


def train(config: Config) -> Path:
    """Run ``config.train.num_iterations`` iterations; returns the run folder."""
    held_out = read_prompt_file(config.eval.file, "eval.file") if config.eval.file else None
    run_dir = _fresh_run_dir(Path(config.train.output_dir))
    run = setup_run(config, run_dir)
    acc = run.accelerator
    if acc.is_main_process:
        save_config(config, run_dir / "config.yaml")
    acc.init_trackers("tensorboard")
    started = time.perf_counter()
    before = evaluate_run(run, held_out, "before") if held_out and acc.is_main_process else None
    history: list[dict[str, float]] = []
    total, done = config.train.num_iterations, 0
    try:
        with tqdm(range(1, total + 1), desc="parrot", unit="it", disable=not acc.is_main_process, dynamic_ncols=True) as bar:
            for iteration in bar:
                result = train_iteration(run)
                done = iteration  # the weights now are those of this iteration
                history.append(result.stats)
                bar.set_postfix({"|P|": int(result.stats["selected"]), **{n: f"{result.stats.get(f'reward/{n}/mean', float('nan')):.3f}" for n in run.reward_names}})
                record_iteration(run, result, iteration)
    except KeyboardInterrupt:  # keep what was trained so far
        if done:
            logger.warning("interrupted: saving the weights of iteration %d to %s", done, run_dir / "checkpoints")
            save_checkpoint(run, done)
        raise
    save_checkpoint(run, total)
    after = evaluate_run(run, held_out, "after") if before is not None else None
    acc.end_training()
    if acc.is_main_process:
        print(write_summary(run, history, before, after, time.perf_counter() - started))
    return run_dir


def evaluate_run(run: Run, prompts: list[str], tag: str) -> Evaluation:
    """Score the current weights on held-out prompts from fixed noise; save a grid ``samples/{tag}.png``."""
    cfg = run.config
    identifiers = cfg.eval.identifiers and cfg.prompts.identifiers
    prefix = identifier_prefix(len(run.rewards), cfg.prompts.identifier_template) if identifiers else ""
    result = evaluate(
        run.policy,
        run.rewards,
        run.reward_names,
        prompts,
        images_per_prompt=cfg.eval.images_per_prompt,
        prefix=prefix,
        seed=cfg.eval.seed,
        num_inference_steps=cfg.sample.num_inference_steps,
        guidance_scale=cfg.sample.guidance_scale,
        batch_size=cfg.sample.batch_size,
        desc=f"held-out prompts, {tag} training",
    )
    shown = min(len(result.images), 8 * cfg.eval.images_per_prompt)  # eight prompts, one per row
    save_grid(result.images[:shown], run.run_dir / "samples" / f"{tag}.png", ncols=cfg.eval.images_per_prompt)
    return result


def record_iteration(run: Run, result: IterationResult, iteration: int) -> None:
    """After an iteration: TensorBoard scalars, metrics.jsonl, image grids and periodic checkpoints."""
    cfg, acc = run.config.train, run.accelerator
    acc.log(result.stats, step=iteration)
    if acc.is_main_process:
        with open(run.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"iteration": iteration, **result.stats}) + "\n")
        if iteration in (1, cfg.num_iterations) or (cfg.log_images_every and iteration % cfg.log_images_every == 0):
            log_images(run, result.images, iteration)
    if cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0 and iteration != cfg.num_iterations:
        save_checkpoint(run, iteration)


def log_images(run: Run, images: Tensor, iteration: int, limit: int = 16) -> None:
    shown = images[:limit]
    save_grid(shown, run.run_dir / "samples" / f"iter_{iteration:06d}.png")
    tracker = run.accelerator.get_tracker("tensorboard", unwrap=True)
    tracker.add_images("samples", shown.float().cpu(), global_step=iteration)


def save_checkpoint(run: Run, iteration: int) -> Path:
    """Write trainable weights to checkpoints/iter_N atomically (staging folder + rename)."""
    acc = run.accelerator
    target = run.run_dir / "checkpoints" / f"iter_{iteration:06d}"
    acc.wait_for_everyone()
    if acc.is_main_process:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
        run.policy.save_trainable(staging, run.config.model.trainable)
        save_config(run.config, staging / "config.yaml")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    acc.wait_for_everyone()
    return target


def write_summary(run: Run, history: list[dict[str, float]], before: Evaluation | None, after: Evaluation | None, seconds: float) -> str:
    """``summary.json`` and ``summary.md`` in the run folder; returns the text shown to the user.

    The table compares every reward on the held-out prompts before and after training; without an
    evaluation set it falls back to the training batches' means at the first and last iteration.
    """
    summary: dict = {"iterations": len(history), "wall_time_s": round(seconds, 1)}
    if history:
        summary["mean_iteration_s"] = sum(h["time/iteration"] for h in history) / len(history)
    lines = [f"run folder: {run.run_dir}", f"iterations: {len(history)}, wall time {seconds / 60:.1f} min"]
    if before is not None and after is not None:
        summary.update(eval_prompts=len(set(before.prompts)), eval_images=len(before.prompts), before=before.means(), after=after.means())
        lines += [f"held-out prompts ({len(set(before.prompts))} prompts × {run.config.eval.images_per_prompt} images):", comparison_table(before.means(), after.means())]
    elif len(history) >= 1:
        first, last = history[0], history[-1]
        train_means = {n: (first[f"reward/{n}/mean"], last[f"reward/{n}/mean"]) for n in run.reward_names if f"reward/{n}/mean" in first}
        summary["training_batches"] = {n: {"first": a, "last": b} for n, (a, b) in train_means.items()}
        lines += ["training batches, first -> last iteration:"] + [f"  {n:>24}: {a:.4f} -> {b:.4f}  ({b - a:+.4f})" for n, (a, b) in train_means.items()]
    text = "\n".join(lines)
    (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run.run_dir / "summary.md").write_text(f"# Run summary\n\n{text}\n")
    return text


def _fresh_run_dir(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... if it already holds a run: never overwrite earlier work."""
    candidate, n = path, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    try:
        candidate.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ParrotError(f"cannot create the run folder {str(candidate)!r}: {err.strerror or err}") from None
    return candidate
