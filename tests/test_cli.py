import subprocess
import sys

import pytest
import torch

from parrot_t2i.cli import main
from parrot_t2i.config import EvalConfig


def test_train_tiny_preset_end_to_end(tmp_path, capsys):
    code = main(
        [
            "train",
            "--config",
            "configs/tiny.yaml",
            "--set",
            "train.num_iterations=2",
            "--set",
            "sample.num_inference_steps=3",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "| brightness |" in out and str(tmp_path / "run") in out


def test_user_mistakes_exit_2_with_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output_dir, runs/parrot, is under the cwd
    assert main(["train", "--set", "train.lr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("parrot: error: unknown config key 'train.lr' (did you mean 'train.learning_rate'?)")
    assert len(err.splitlines()) == 1
    assert main(["train", "--set", "rewards=[brightnes]", "--set", "train.num_iterations=1"]) == 2
    assert "known rewards: brightness" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before a run folder was claimed for it


def test_console_entry_point_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "parrot_t2i.cli", "train", "--config", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not found" in proc.stderr


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", "--config", "tiny", "--output-dir", str(blocker / "run")]) == 2
    assert "cannot create the run folder" in capsys.readouterr().err


def test_rewards_command_lists_registry(capsys):
    assert main(["rewards"]) == 0
    assert "brightness" in capsys.readouterr().out


def test_ctrl_c_saves_the_weights_trained_so_far(tmp_path):
    import signal
    import time

    run_dir, log = tmp_path / "run", tmp_path / "stderr.txt"
    with open(log, "w") as err_file:  # a file, not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "parrot_t2i.cli",
                "train",
                "--config",
                "tiny",
                "--set",
                "train.num_iterations=1000",
                "--output-dir",
                str(run_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            text=True,
        )
        metrics = run_dir / "metrics.jsonl"
        # Wait for the event (two iterations logged), however long a loaded machine takes.
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
            if proc.poll() is not None:
                pytest.fail(f"training exited ({proc.returncode}) before two iterations: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=1800)  # a hang guard only: saving the checkpoint takes seconds
    err = log.read_text()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    saved = sorted((run_dir / "checkpoints").iterdir())
    assert len(saved) == 1 and int(saved[0].name.removeprefix("iter_")) >= 2
    assert (saved[0] / "unet_trainable.safetensors").is_file()


def test_generate_writes_a_grid_and_its_settings(tmp_path, capsys):
    import json

    from PIL import Image

    out = tmp_path / "grid.png"
    flags = [
        "--n",
        "4",
        "--steps",
        "4",
        "--seed",
        "3",
        "--rewards",
        "mini_alignment,mini_sentiment",
        "--identifiers",
        "2",
        "--out",
        str(out),
    ]
    assert main(["generate", "a red circle", *flags]) == 0
    assert Image.open(out).size == (280, 280)  # 2×2 tiles of 32 px + 2 px padding = 70 px, upscaled ×4
    record = json.loads(out.with_suffix(".json").read_text())
    assert {
        k: record[k] for k in ("prompt", "model", "expanded", "identifiers", "seed", "num_inference_steps", "eta")
    } == {
        "prompt": "a red circle",
        "model": "builtin:mini",
        "expanded": True,
        "identifiers": ["<reward 2>"],
        "seed": 3,
        "num_inference_steps": 4,
        "eta": 0.0,
    }
    defaults = EvalConfig()  # a model without a run takes the config's defaults: the one source
    assert record["guidance"] == {
        "mode": "original-prompt-centred (Eq. 5)",
        "w1": defaults.w1,
        "w2": defaults.w2,
        "rescale": defaults.guidance_rescale,
    }
    assert len(record["images"]) == 4
    for image in record["images"]:
        assert (
            "red circle" in image["expansion"] and len(image["expansion"].split()) > 8
        )  # the mini PEN's full captions
        assert set(image["rewards"]) == {"mini_alignment", "mini_sentiment"} and all(
            0 <= v <= 1 for v in image["rewards"].values()
        )
    assert "mean rewards: mini_alignment" in capsys.readouterr().out
    first = Image.open(out).tobytes()
    assert main(["generate", "a red circle", *flags]) == 0
    assert Image.open(out).tobytes() == first  # seeded

    assert (
        main(
            [
                "generate",
                "a red circle",
                "--n",
                "2",
                "--steps",
                "4",
                "--no-expand",
                "--no-original-guidance",
                "--guidance-scale",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads(out.with_suffix(".json").read_text())
    assert (
        record["expanded"] is False
        and record["guidance"] == {"mode": "classifier-free", "scale": 3.0, "rescale": EvalConfig().guidance_rescale}
        and record["identifiers"] == []
    )
    assert [image["expansion"] for image in record["images"]] == ["a red circle"] * 2 and "rewards" not in record[
        "images"
    ][0]


def test_generate_bad_input_is_one_line(tmp_path, capsys):
    for argv, message in [
        (["--run", str(tmp_path)], "is not a run folder"),
        (["--n", "0"], "--n must be >= 1"),
        (["--w2", "-1"], "--w2 must be >= 0"),
        (["--guidance-scale", "0.5"], "--guidance-scale must be >= 1.0"),  # sample.guidance_scale's range
        (["--identifiers", "all"], "--identifiers needs to know the rewards"),
        (["--identifiers", "5", "--rewards", "mini_alignment,mini_sentiment"], "reward numbers 1..2"),
        (["--rewards", "mini_alignmnt"], "mini_alignmnt"),
        (["--run", str(tmp_path), "--pen", "builtin:mini"], "--pen goes with --model"),
    ]:
        assert (
            main(["generate", "a red circle", "--steps", "2", "--n", "1", "--out", str(tmp_path / "g.png"), *argv]) == 2
        )
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_generate_warns_about_words_the_mini_world_does_not_have(tmp_path, capsys):
    one_image = ["--steps", "1", "--n", "1", "--no-expand", "--out", str(tmp_path / "g.png")]
    assert main(["generate", "a red dog on a blue background", *one_image]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "parrot: warning: the mini world has no 'dog', 'blue background': the model will not draw them "
        "(docs/MINI_WORLD.md lists what it has)"
    ]
    assert main(["generate", "a red circle on a dark blue background", *one_image]) == 0
    assert "warning" not in capsys.readouterr().err


def test_generate_from_a_joint_run_uses_its_trained_pen_and_identifiers(tmp_path, capsys, train_tiny):
    import json

    run = tmp_path / "run"
    assert train_tiny(run, "eval.w1=3.5", "eval.w2=1.5", "eval.guidance_rescale=0.5") == 0
    out = tmp_path / "g.png"
    assert main(["generate", "a blue square", "--run", str(run), "--n", "2", "--steps", "2", "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["model"].endswith("iter_000001") and record["identifiers"] == ["<reward 1>"] and record["expanded"]
    assert record["guidance"] == {
        "mode": "original-prompt-centred (Eq. 5)",
        "w1": 3.5,
        "w2": 1.5,
        "rescale": 0.5,
    }  # the run's own eval settings
    assert set(record["images"][0]["rewards"]) == {"brightness"}


def test_sft_pen_on_jsonl_pairs(tmp_path, capsys):
    import json

    from parrot_t2i.pen import PromptExpander
    from parrot_t2i.pen_sft import sft_batch

    pairs = [("a red circle", "a tiny red circle in the middle"), ("a blue square", "a huge blue square at the top")]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "expansion": e}) + "\n" for p, e in pairs))

    def nll(pen):
        ids, mask, labels = sft_batch(pen, pairs)
        with torch.no_grad():
            return pen.model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()

    before = nll(PromptExpander.from_pretrained("builtin:mini"))
    out = tmp_path / "pen"
    argv = [
        "sft-pen",
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        "30",
        "--batch-size",
        "4",
        "--learning-rate",
        "3e-3",
        "--work-dir",
        str(tmp_path / "work"),
    ]
    assert main(argv) == 0
    tuned = PromptExpander.from_pretrained(str(out))  # the template travels with the model
    assert tuned.template == PromptExpander.from_pretrained("builtin:mini").template
    assert nll(tuned) < 0.5 * before, (before, nll(tuned))

    data.write_text('{"prompt": "a red circle"}\n')
    assert main(argv) == 2
    assert f'{data}:1: expected a JSON object with "prompt" and "expansion"' in capsys.readouterr().err
    assert main([*argv[:-4], "--steps", "0"]) == 2 and "--steps must be >= 1" in capsys.readouterr().err
    data.write_text("".join(json.dumps({"prompt": p, "expansion": e}) + "\n" for p, e in pairs))
    for template, message in [
        ("Input: {oops} {prompt}", "may use exactly one placeholder, {prompt} (found {oops})"),
        ("Input: no placeholder", "(it has none)"),
        ("Input: {prompt", "is not a format string"),
    ]:
        assert main([*argv, "--template", template]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "{{ and }} for literal braces" in err, err


def test_mini_training_commands_write_loadable_models_and_resume(tmp_path, capsys):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    out, work = tmp_path / "pen", tmp_path / "work"
    assert main(["mini", "train-pen", "--steps", "3", "--out", str(out), "--work-dir", str(work)]) == 0
    model, tokenizer = GPT2LMHeadModel.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert "<reward 1>" in tokenizer.get_vocab() and (out / "README.md").read_text().startswith(
        "# Mini-world prompt expansion network"
    )
    assert '"step": 3' in (work / "pen" / "checkpoint" / "progress.json").read_text()
    before = {n: p.clone() for n, p in model.named_parameters()}
    assert (
        main(["mini", "train-pen", "--steps", "3", "--out", str(out), "--work-dir", str(work)]) == 0
    )  # resumes: nothing left to do
    assert all(torch.equal(p, before[n]) for n, p in GPT2LMHeadModel.from_pretrained(out).named_parameters())


def test_mini_train_t2i_runs_both_phases_and_loads(tmp_path, capsys):
    from parrot_t2i.policies.unet import T2IPolicy

    out, work = tmp_path / "t2i", tmp_path / "work"
    assert (
        main(["mini", "train-t2i", "--steps", "2", "--finetune-steps", "1", "--out", str(out), "--work-dir", str(work)])
        == 0
    )
    assert '"step": 2' in (work / "t2i" / "epsilon" / "checkpoint" / "progress.json").read_text()
    assert '"step": 1' in (work / "t2i" / "v_prediction" / "checkpoint" / "progress.json").read_text()
    policy = T2IPolicy.from_pretrained(str(out))
    assert policy.scheduler.config.prediction_type == "v_prediction" and policy.resolution == 32
    assert main(["mini", "train-t2i", "--steps", "0"]) == 2 and "--steps must be >= 1" in capsys.readouterr().err


def test_mini_patch_size_and_layers_are_checked_and_go_with_train_flow_only(tmp_path, capsys):
    work = ["--work-dir", str(tmp_path)]
    assert main(["mini", "train-flow", "--patch-size", "3", *work]) == 2
    assert "the patch size must divide the 32-pixel image side (got 3)" in capsys.readouterr().err
    assert main(["mini", "train-t2i", "--patch-size", "2", *work]) == 2
    assert "--patch-size, --layers and --freeze-text-encoder go with train-flow" in capsys.readouterr().err
    assert main(["mini", "train-flow", "--layers", "0", *work]) == 2
    assert "the transformer needs at least one joint block (got 0 layers)" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before any training started


def test_a_failing_user_reward_names_itself_keeps_its_frames_and_the_run(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "import torch\n"
        "calls = []\n"
        "def flaky(images, prompts):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2:\n"
        "        return 1 / 0\n"
        "    return images.mean((1, 2, 3))\n"
        "def twice(images, prompts):\n"
        "    return torch.zeros(2 * len(images))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    common = [
        "train",
        "--config",
        "tiny",
        "--set",
        "train.num_iterations=3",
        "--set",
        "sample.num_inference_steps=2",
        "--set",
        "eval.file=null",
    ]
    run = tmp_path / "run"
    assert main([*common, "--set", "rewards=[my_rewards:flaky]", "--output-dir", str(run)]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        "parrot: error: reward 'my_rewards:flaky' raised ZeroDivisionError: division by zero (on iteration 2); "
        "iterations 1-1 are saved in"
    )
    assert f"parrot train --resume {run}" in last
    assert "my_rewards.py" in err and "return 1 / 0" in err and "trainer.py" not in err  # the user's frames, not ours
    assert (run / "checkpoints" / "iter_000001" / "state" / "progress.json").is_file()

    assert main([*common, "--set", "rewards=[my_rewards:twice]", "--output-dir", str(tmp_path / "run2")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("parrot: error")]  # besides the progress bar
    assert "Traceback" not in err and len(errors) == 1
    assert (
        "reward 'my_rewards:twice' returned scores of shape (32,) for 16 images" in errors[0]
        and "nothing was trained yet" in errors[0]
    )


def test_generate_out_without_or_with_a_bad_extension(tmp_path, capsys):
    assert (
        main(["generate", "a red circle", "--steps", "1", "--n", "1", "--no-expand", "--out", str(tmp_path / "grid")])
        == 0
    )
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "grid.json").is_file()
    capsys.readouterr()
    assert main(["generate", "a red circle", "--steps", "1", "--n", "1", "--out", str(tmp_path / "grid.xyz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write an image to" in err and "'.xyz'" in err
