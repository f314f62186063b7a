import json
import shutil
import sys
import types

import pytest
import torch

from parrot_t2i.config import ConfigError, load_config
from parrot_t2i.diffusion import CFG
from parrot_t2i.provenance import code_version
from parrot_t2i.run import load_prompts, setup_run
from parrot_t2i.trainer import assign_rewards, condition, sde_window, train, train_iteration


def tiny_config(tmp_path, *overrides):
    return load_config("tiny", [f"train.output_dir={tmp_path / 'run'}", "sample.num_inference_steps=4", *overrides])


def test_round_robin_rewards_and_identifier_conditioning():
    originals, groups, index = assign_rewards(["a cat", "a dog"], num_rewards=2, images_per_prompt=3)
    assert originals == ["a cat"] * 3 + ["a dog"] * 3
    assert groups.tolist() == [0, 0, 0, 1, 1, 1] and index.tolist() == [0, 1, 0, 0, 1, 0]
    expansions = ["a fluffy cat", "a cat, 4k", "a cat", "a dog", "a dog at noon", "a dog"]
    conditioned = condition(expansions, index, ["<aesthetic>", "<align>"])
    assert conditioned == [
        "<aesthetic> a fluffy cat",
        "<align> a cat, 4k",
        "<aesthetic> a cat",
        "<aesthetic> a dog",
        "<align> a dog at noon",
        "<aesthetic> a dog",
    ]
    _, _, index = assign_rewards(["a cat"], 4, 2)
    assert condition(["a cat", "a cat"], index, None) == ["a cat", "a cat"] and index.tolist() == [0, 1]


def test_per_prompt_reward_groups_follow_algorithm_1(tmp_path):
    originals, groups, index = assign_rewards(
        ["a cat", "a dog"], num_rewards=2, images_per_prompt=3, group_by="prompt_reward"
    )
    assert originals == ["a cat"] * 6 + ["a dog"] * 6
    assert groups.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert index.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]
    # In a run, the N images of one (prompt, k) share one expansion, and the PEN is credited with
    # each image's weight on that one expansion's tokens.
    run = setup_run(
        tiny_config(
            tmp_path,
            "sample.group_by=prompt_reward",
            "sample.prompts_per_iteration=2",
            "sample.images_per_prompt=3",
            "rewards=[brightness, colorfulness]",
        ),
        tmp_path,
    )
    batch = train_iteration(run).batch
    assert batch.groups.tolist() == groups.tolist() and batch.reward_index.tolist() == index.tolist()
    for g in range(4):
        rows = (batch.groups == g).nonzero().squeeze(1)
        assert len({batch.expansions[r] for r in rows.tolist()}) == 1
        assert all(torch.equal(batch.pen_samples.ids[r], batch.pen_samples.ids[rows[0]]) for r in rows.tolist())
        assert all(
            text.startswith(f"<reward {int(batch.reward_index[rows[0]]) + 1}> ")
            for text in (batch.conditioned[r] for r in rows.tolist())
        )
    assert len(set(batch.expansions)) > 1  # different groups sampled their own


def test_prompt_files(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# comment\na cat\n\n  a dog  \n")
    assert load_prompts(load_config(None, [f"prompts.file={path}"])) == ["a cat", "a dog"]
    path.write_text("\n# only a comment\n")
    with pytest.raises(ConfigError, match="holds no prompts"):
        load_prompts(load_config(None, [f"prompts.file={path}"]))
    with pytest.raises(ConfigError, match="does not exist"):
        load_prompts(load_config(None, [f"prompts.file={tmp_path / 'missing.txt'}"]))
    with pytest.raises(
        ConfigError, match="unknown prompt set 'builtin:nope'.*builtin:mini-heldout, builtin:mini-train"
    ):
        load_prompts(load_config(None, ["prompts.file=builtin:nope"]))
    assert load_prompts(load_config(None, ["prompts.prompts=['a cat']"])) == ["a cat"]  # inline wins
    train_prompts, held_out = (
        load_prompts(load_config(None)),
        set(load_prompts(load_config(None, ["prompts.file=builtin:mini-heldout"]))),
    )
    assert len(train_prompts) == 114 and len(held_out) == 30 and not held_out & set(train_prompts)


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize(
    "variant",
    [
        ["model.trainable=cross_attention"],
        ["model.trainable=lora", "model.lora_rank=2"],
        ["objective.name=weighted_sum", "rewards=[brightness, colorfulness]"],
        ["rewards=[brightness, colorfulness]", "objective.reward_normalization=group", "train.timestep_fraction=0.5"],
        ["train.clip_range=0.2", "train.num_inner_epochs=2", "train.batch_size=3"],
        ["objective.name=front_rank", "rewards=[brightness, colorfulness]", "objective.selection=global"],
        [
            "objective.name=hv_contribution",
            "rewards=[brightness, colorfulness]",
            "sample.group_by=prompt_reward",
            "sample.images_per_prompt=2",
        ],
    ],
)
def test_an_iteration_changes_trainable_weights_and_nothing_else(tmp_path, variant):
    run = setup_run(tiny_config(tmp_path, *variant), tmp_path)
    unet_before, text_before = snapshot(run.policy.unet), snapshot(run.policy.text_encoder)
    trainable = {n for n, p in run.policy.unet.named_parameters() if p.requires_grad}
    result = train_iteration(run)
    assert result.stats["selected"] > 0 and torch.isfinite(torch.tensor(result.stats["loss"]))
    changed = {n for n, p in run.policy.unet.named_parameters() if not torch.equal(p, unet_before[n])}
    assert changed and changed <= trainable
    assert all(torch.equal(p, text_before[n]) for n, p in run.policy.text_encoder.named_parameters())


@pytest.mark.parametrize("channels_last", [True, False])
def test_model_channels_last_sets_the_unet_layout(tmp_path, channels_last):
    run = setup_run(tiny_config(tmp_path, f"model.channels_last={str(channels_last).lower()}"), tmp_path)
    weight = run.policy.unet.conv_in.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert weight.is_contiguous() != channels_last
    assert train_iteration(run).stats["selected"] > 0


def count_update_forwards(run):
    calls = []
    handle = run.policy.unet.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    result = train_iteration(run)
    handle.remove()
    sampling_calls = run.config.sample.num_inference_steps * -(-len(result.images) // run.config.sample.batch_size)
    return result, calls[sampling_calls:]


def test_dominated_samples_cost_no_forward_or_backward_pass(tmp_path):
    run = setup_run(tiny_config(tmp_path, "train.batch_size=2"), tmp_path)
    result, update_calls = count_update_forwards(run)
    selected = int(result.selection.selected.sum())
    assert selected < len(result.images)  # brightness only: one winner per group of 4 (barring ties)
    steps = run.config.sample.num_inference_steps
    # The update packs the selected samples' (sample, step) pairs into chunks of train.batch_size;
    # each UNet call sees 2 × chunk rows for the CFG branches.
    assert sum(update_calls) == 2 * selected * steps
    assert len(update_calls) == -(-selected * steps // 2)
    assert all(rows == 4 for rows in update_calls[:-1])

    run = setup_run(tiny_config(tmp_path, "objective.name=weighted_sum", "train.batch_size=2"), tmp_path)
    result, update_calls = count_update_forwards(run)
    assert sum(update_calls) == 2 * len(result.images) * steps


def test_packing_pairs_across_timesteps_leaves_the_gradient_unchanged(tmp_path):
    """Chunks of (sample, step) pairs with mixed timesteps give the gradient of one big chunk."""
    grads = []
    for batch_size in (3, 1000):
        run = setup_run(
            tiny_config(tmp_path, f"train.batch_size={batch_size}", "train.timestep_fraction=0.6"),
            tmp_path / str(batch_size),
        )
        run.optimizer.step = lambda run=run: grads.append([p.grad.clone() for p in run.params])
        assert 0 < train_iteration(run).stats["selected"] < 16
    assert len(grads) == 2
    for small, whole in zip(*grads):
        torch.testing.assert_close(small, whole, atol=1e-6, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in grads[0])


def test_timestep_subsampling_trains_on_a_fraction_of_the_steps(tmp_path):
    run = setup_run(
        tiny_config(
            tmp_path, "objective.name=weighted_sum", "train.timestep_fraction=0.5", "sample.num_inference_steps=5"
        ),
        tmp_path,
    )
    result, update_calls = count_update_forwards(run)
    # ceil(0.5 · 5) = 3 steps per sample, all 16 samples in one chunk, both CFG branches.
    assert update_calls == [2 * len(result.images)] * 3


def mean_brightness(run, seed=123, n=16):
    """Brightness of images drawn with fixed noise: a low-variance before/after measure."""
    prompts = (run.prompts * n)[:n]
    cond = run.policy.encode([f"<reward 1> {p}" for p in prompts])
    uncond = run.uncond.expand(n)
    traj = run.policy.sample(
        cond, uncond, CFG(run.config.sample.guidance_scale), generator=torch.Generator().manual_seed(seed)
    )
    return run.policy.decode(traj.latents[:, -1]).mean().item()


def test_learning_brightness_rises(tmp_path):
    """End to end: with one easy reward, a handful of seeded iterations raise it."""
    run = setup_run(load_config("tiny", [f"train.output_dir={tmp_path}"]), tmp_path)
    before = mean_brightness(run)
    for _ in range(8):
        train_iteration(run)
    after = mean_brightness(run)
    assert after > before + 0.03, (before, after)  # measured: 0.557 -> 0.598 on seed 0


def test_train_writes_a_complete_run_folder_and_never_overwrites(tmp_path, capsys):
    config = tiny_config(tmp_path, "train.num_iterations=3", "train.checkpoint_every=2", "train.log_images_every=2")
    run_dir = train(config)
    assert run_dir == tmp_path / "run"
    assert (run_dir / "config.yaml").is_file() and load_config(run_dir / "config.yaml") == config
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2, 3] and "reward/brightness/mean" in metrics[0]
    samples = ["after.png", "before.png", "iter_000001.png", "iter_000002.png", "iter_000003.png"]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == samples
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["iter_000002", "iter_000003"]
    assert (run_dir / "checkpoints" / "iter_000003" / "unet_trainable.safetensors").is_file()
    assert list(run_dir.rglob("events.out.tfevents.*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["eval_prompts"] == 30 and summary["eval_images"] == 30
    assert set(summary["before"]) == set(summary["after"]) == {"brightness", "average", "hv_per_prompt"}
    assert summary["after"]["hv_per_prompt"] >= 0 and len(summary["hypervolume_reference"]) == 1
    assert summary["code_version"] == code_version()  # which code trained it
    assert "| brightness |" in capsys.readouterr().out and "| brightness |" in (run_dir / "summary.md").read_text()
    report = json.loads((run_dir / "report" / "results.json").read_text())
    assert [e["label"] for e in report["entries"]] == ["before", "after"] and report["entries"][1]["source"].endswith(
        "iter_000003"
    )
    assert report["entries"][0]["rewards"]["brightness"]["mean"] == pytest.approx(summary["before"]["brightness"])
    assert (run_dir / "reward_curves.png").is_file() and "figure_0.png" in report["plots"]
    assert train(config) == tmp_path / "run-2"


def test_summary_without_eval_set_reports_training_batches(tmp_path, capsys):
    run_dir = train(tiny_config(tmp_path, "train.num_iterations=2", "eval.file=null"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "before" not in summary and set(summary["training_batches"]["brightness"]) == {"first", "last"}
    assert not (run_dir / "samples" / "before.png").exists()
    assert "brightness:" in capsys.readouterr().out


def test_non_finite_rewards_are_excluded_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    module = types.ModuleType("flaky_rewards")
    module.half_nan = lambda images, prompts: torch.where(
        torch.arange(len(images)) % 2 == 0, images.mean(dim=(1, 2, 3)), torch.tensor(float("nan"))
    )
    monkeypatch.setitem(sys.modules, "flaky_rewards", module)
    run = setup_run(tiny_config(tmp_path, "rewards=['flaky_rewards:half_nan']"), tmp_path)
    with caplog.at_level("WARNING"):
        result = train_iteration(run)
    assert result.stats["invalid_samples"] == 8
    assert "8 sample(s) had a non-finite reward" in caplog.text
    assert not result.selection.selected[1::2].any() and result.selection.selected.any()


def test_joint_iteration_updates_both_networks_and_pen_only_leaves_the_t2i_model(tmp_path):
    run = setup_run(tiny_config(tmp_path), tmp_path)
    assert run.expander is not None and run.pen_params and run.params
    unet_before, pen_before = snapshot(run.policy.unet), snapshot(run.expander.model)
    result = train_iteration(run)
    assert result.batch.pen_samples is not None and result.batch.expansions == result.batch.pen_samples.texts
    assert all(c == f"<reward 1> {e}" for c, e in zip(result.batch.conditioned, result.batch.expansions))
    assert any(not torch.equal(p, unet_before[n]) for n, p in run.policy.unet.named_parameters())
    changed = {n for n, p in run.expander.model.named_parameters() if not torch.equal(p, pen_before[n])}
    assert changed and all("lora_" in n for n in changed)  # the SFT weights stay frozen
    assert result.stats["pen/loss"] != 0 and result.stats["pen/grad_norm"] > 0

    run = setup_run(tiny_config(tmp_path, "train.t2i=false"), tmp_path)
    unet_before, pen_before = snapshot(run.policy.unet), snapshot(run.expander.model)
    result = train_iteration(run)
    assert "loss" not in result.stats and all(
        torch.equal(p, unet_before[n]) for n, p in run.policy.unet.named_parameters()
    )
    assert any(not torch.equal(p, pen_before[n]) for n, p in run.expander.model.named_parameters())


def test_pen_kl_term_is_logged_and_dominated_samples_still_count_for_it(tmp_path):
    run = setup_run(tiny_config(tmp_path, "pen.kl_coef=0.1"), tmp_path)
    train_iteration(run)  # moves the adapters away from the SFT model
    assert train_iteration(run).stats["pen/kl"] > 0


def test_without_a_pen_the_t2i_model_sees_the_user_prompt(tmp_path):
    run = setup_run(tiny_config(tmp_path, "pen.pretrained=null", "train.pen=false"), tmp_path)
    result = train_iteration(run)
    assert run.expander is None and result.batch.pen_samples is None and "pen/loss" not in result.stats
    assert result.batch.conditioned == [f"<reward 1> {p}" for p in result.batch.originals]
    with pytest.raises(ConfigError, match="train.pen=true needs a PEN"):
        tiny_config(tmp_path, "pen.pretrained=null")


def test_the_decoupled_ablation_is_two_ordinary_runs_combined_at_load_time(tmp_path, capsys):
    import yaml

    from parrot_t2i.cli import main
    from parrot_t2i.runs import open_combined, open_run, run_expander, run_policy

    common = ["train.num_iterations=2", "eval.file=null"]
    t2i_run = train(tiny_config(tmp_path, *common, "train.pen=false", f"train.output_dir={tmp_path / 't'}"))
    pen_run = train(tiny_config(tmp_path, *common, "train.t2i=false", f"train.output_dir={tmp_path / 'p'}"))
    config, policy, expander = open_combined(t2i_run, pen_run)
    t2i_weights = run_policy(*open_run(t2i_run)).unet.state_dict()
    pen_weights = run_expander(*open_run(pen_run)).model.state_dict()
    assert all(torch.equal(policy.unet.state_dict()[n], t2i_weights[n]) for n in t2i_weights)
    assert all(torch.equal(expander.model.state_dict()[n], pen_weights[n]) for n in pen_weights)
    assert not (open_run(t2i_run)[1] / "pen").exists()  # the T2I-only run trained no PEN: it comes from the other

    other = tmp_path / "other"  # a PEN-only run against other rewards cannot be combined with it
    shutil.copytree(pen_run, other)
    data = yaml.safe_load((other / "config.yaml").read_text())
    data["rewards"] = [{"name": "colorfulness"}]
    (other / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(
        ConfigError, match="cannot combine the T2I model of .* with the PEN of .*: they differ in rewards"
    ):
        open_combined(t2i_run, other)

    out = tmp_path / "report"
    argv = ["evaluate", "--combine", str(t2i_run), str(pen_run), "--images-per-prompt", "1", "--out", str(out)]
    assert main(argv) == 0 and "t + PEN of p" in capsys.readouterr().out
    image = tmp_path / "g.png"
    assert (
        main(
            [
                "generate",
                "a red circle",
                "--run",
                str(t2i_run),
                "--pen-run",
                str(pen_run),
                "--n",
                "1",
                "--steps",
                "2",
                "--out",
                str(image),
            ]
        )
        == 0
        and image.is_file()
    )
    assert main(["generate", "a red circle", "--pen-run", str(pen_run)]) == 2
    assert "--pen-run goes with --run" in capsys.readouterr().err


def test_train_mode_is_retired_with_a_pointer_to_its_replacement():
    assert load_config(None, ["train.mode=joint"]).train.t2i  # what old run folders hold: dropped
    with pytest.raises(ConfigError, match="train.mode is gone: .*--combine T2I_RUN PEN_RUN"):
        load_config(None, ["train.mode=decoupled"])


@pytest.mark.parametrize("trainable", ["cross_attention", "lora"])
def test_kl_to_the_reference_is_zero_at_the_start_and_pulls_back_after(tmp_path, trainable):
    """β·KL(p_θ ‖ p_ref): no effect while θ is the reference, then positive, with the reference
    (adapters off, or the frozen copy) left untouched by the update."""
    grads = {}
    for beta in (0.0, 10.0):
        run = setup_run(
            tiny_config(tmp_path, f"model.trainable={trainable}", f"train.kl_coef={beta}", "model.lora_rank=2"),
            tmp_path / f"{trainable}{beta}",
        )
        initial = [p.detach().clone() for p in run.params]
        step = run.optimizer.step
        run.optimizer.step = lambda run=run, beta=beta, step=step: (
            grads.setdefault(beta, [p.grad.clone() for p in run.params]),
            step(),
        )
        first = train_iteration(run).stats
        if beta:
            assert first["kl"] == 0.0
            assert train_iteration(run).stats["kl"] > 0
            assert not all(torch.equal(a, b) for a, b in zip(initial, run.params))  # it trained
            if trainable == "cross_attention":  # and the frozen copy still holds the weights before RL
                assert all(torch.equal(a, b) for a, b in zip(initial, run.reference))
    for without, with_kl in zip(grads[0.0], grads[10.0]):  # same seed, same samples: the first gradients agree
        torch.testing.assert_close(without, with_kl)


def test_runs_started_into_one_output_dir_at_once_claim_different_folders(tmp_path):
    import threading

    from parrot_t2i.run_folder import claim_run_dir

    (tmp_path / "runs" / "busy").mkdir(parents=True)
    (tmp_path / "runs" / "busy" / "metrics.jsonl").write_text("{}\n")  # earlier work: never reused
    start, claimed = threading.Barrier(8), []

    def claim():
        start.wait()
        claimed.append(claim_run_dir(tmp_path / "runs" / "busy"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(claimed)) == 8 and tmp_path / "runs" / "busy" not in claimed
    assert sorted(p.name for p in claimed) == sorted(f"busy-{n}" for n in range(2, 10))
    empty = tmp_path / "runs" / "empty"
    empty.mkdir()
    assert claim_run_dir(empty) == empty  # an empty folder is free to use


def test_the_sde_window_slides_as_mixgrpos_by_hand():
    # T = 5, a window of 2 moving one step every 3 iterations: 4 positions (starts 0-3), then back to 0.
    assert [sde_window(i, 5, 2, 3).start for i in range(13)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0]
    assert sde_window(1, 5, 2, 3) == range(0, 2) and sde_window(4, 5, 2, 3) == range(1, 3)
    assert sde_window(7, 5, None, 3) == range(5) and sde_window(9, 5, 5, 1) == range(5)
    # CPS: the last step (no noise, no density) is in no window; the window slides over the other four.
    assert sde_window(0, 5, None, 1, last_deterministic=True) == range(4)
    assert [sde_window(i, 5, 2, 1, last_deterministic=True).start for i in range(4)] == [0, 1, 2, 0]
    assert sde_window(3, 5, 5, 1, last_deterministic=True) == range(4)


def test_only_the_window_is_stochastic_and_only_it_is_trained(tmp_path):
    run = setup_run(tiny_config(tmp_path, "sample.sde_window=2", "sample.sde_window_shift_every=1"), tmp_path)
    sampled, trained = [], []
    sample, step_mean_std = run.policy.sample, run.policy.step_mean_std
    run.policy.sample = lambda *a, **k: sampled.append(sample(*a, **k)) or sampled[-1]
    run.policy.step_mean_std = lambda x, t, *a: trained.extend(t.tolist()) or step_mean_std(x, t, *a)
    result = train_iteration(run, iteration=1)  # the window's second position: steps 1 and 2 of 4
    assert result.stats["selected"] > 0
    log_probs = torch.cat([t.log_probs for t in sampled])
    assert (log_probs[:, 1:3] != 0).all() and (log_probs[:, [0, 3]] == 0).all()
    timesteps = sampled[0].timesteps.tolist()
    assert set(trained) == {timesteps[1], timesteps[2]}
    with pytest.raises(ConfigError, match="sample.sde_window \\(5\\) is longer than the chain"):
        tiny_config(tmp_path, "sample.sde_window=5")


def test_a_last_step_without_noise_is_neither_stochastic_nor_trained(tmp_path):
    """A DDIM scheduler whose final ᾱ is one has σ = 0 at its last step: the trainer leaves it out."""
    run = setup_run(tiny_config(tmp_path), tmp_path)
    assert not run.policy.last_step_deterministic  # the tiny model keeps ᾱ_0 < 1, like SD
    run.policy.scheduler.register_to_config(set_alpha_to_one=True)
    assert run.policy.last_step_deterministic
    sampled, trained = [], []
    sample, step_mean_std = run.policy.sample, run.policy.step_mean_std
    run.policy.sample = lambda *a, **k: sampled.append(sample(*a, **k)) or sampled[-1]
    run.policy.step_mean_std = lambda x, t, *a: trained.extend(t.tolist()) or step_mean_std(x, t, *a)
    train_iteration(run)
    timesteps = sampled[0].timesteps.tolist()
    assert trained and timesteps[-1] not in trained and set(trained) <= set(timesteps[:-1])
    assert (torch.cat([t.log_probs for t in sampled])[:, -1] == 0).all()
