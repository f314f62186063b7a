"""Interrupted runs continue bit for bit: SIGKILL at a random point, then `--resume`."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from parrot_t2i.checkpoint import resumable_checkpoint
from parrot_t2i.cli import main
from parrot_t2i.config import load_config
from parrot_t2i.trainer import train

# Two rewards, so the Pareto set is a real front; the tiny preset trains the T2I model and the
# mini PEN (LoRA) jointly, so both networks, both optimisers and every generator must come back.
SETTINGS = [
    "rewards=[brightness, colorfulness]",
    "sample.num_inference_steps=3",
    "train.num_iterations=6",
    "train.checkpoint_every=1",
    "eval.file=null",
    "train.log_images_every=0",
]


def final_weights(run_dir):
    checkpoint = run_dir / "checkpoints" / "iter_000006"
    return {
        **load_file(checkpoint / "unet_trainable.safetensors"),
        **{f"pen.{k}": v for k, v in load_file(checkpoint / "pen" / "adapter_model.safetensors").items()},
    }


def assert_bit_equal(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    reference = train(load_config("tiny", [*SETTINGS, f"train.output_dir={tmp_path / 'reference'}"]))

    run_dir = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "parrot_t2i.cli",
        "train",
        "--config",
        "tiny",
        *[a for s in SETTINGS for a in ("--set", s)],
        "--output-dir",
        str(run_dir),
    ]
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err_file:  # a file, not a pipe: a full pipe would stall the child
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err_file, text=True)
        rng = random.Random(7)
        after, delay = rng.randint(1, 4), rng.uniform(0.0, 0.5)  # kill somewhere in iterations 2..5
        marker = run_dir / "checkpoints" / f"iter_{after:06d}" / "state" / "progress.json"
        # Wait for the event (checkpoint `after` written), however long a loaded machine takes.
        while not marker.is_file():
            if proc.poll() is not None:
                pytest.fail(f"training exited ({proc.returncode}) before checkpoint {after}: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=1800)  # a hang guard only
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    written = sorted(p.name for p in (run_dir / "checkpoints").glob("iter_*"))
    assert written and written[-1] < "iter_000006", written  # it really was cut short

    assert main(["train", "--resume", str(run_dir)]) == 0
    assert_bit_equal(final_weights(run_dir), final_weights(reference))
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    reference_metrics = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4, 5, 6]  # iterations after the checkpoint ran again, once
    assert [m["reward/brightness/mean"] for m in metrics] == [m["reward/brightness/mean"] for m in reference_metrics]


def test_resume_mistakes_are_one_line_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    run_dir = train(load_config("tiny", [*SETTINGS, "train.num_iterations=1", f"train.output_dir={tmp_path / 'done'}"]))
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "already finished its 1 iterations" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), "--config", "tiny"]) == 2
    assert "drop --config" in capsys.readouterr().err


def cut_short(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "damaged", ["unet_trainable.safetensors", "pen/adapter_model.safetensors", "state/optimizers.pt"]
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, caplog, damaged):
    run_dir = train(
        load_config(
            "tiny",
            [*SETTINGS, "train.num_iterations=2", "train.checkpoint_every=1", f"train.output_dir={tmp_path / 'run'}"],
        )
    )
    cut_short(run_dir / "checkpoints" / "iter_000002" / damaged)
    checkpoint, done = resumable_checkpoint(run_dir)
    assert (checkpoint.name, done) == ("iter_000001", 1)
    out = tmp_path / "g.png"
    assert main(["generate", "a red circle", "--run", str(run_dir), "--n", "1", "--steps", "1", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["model"].endswith("iter_000001")
    assert f"{damaged} is damaged (cut short): using the checkpoint before iter_000002" in caplog.text
    assert (
        main(["train", "--resume", str(run_dir), "--set", "train.num_iterations=3"]) == 0
    )  # iterations 2 and 3 run again
    assert [json.loads(line)["iteration"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    capsys.readouterr()
    for checkpoint in (run_dir / "checkpoints").glob("iter_*"):
        cut_short(checkpoint / "unet_trainable.safetensors")
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("parrot: error")]
    assert len(err) == 1 and "has no intact checkpoint with a resume state" in err[0]


def test_a_flow_model_resumes_bit_identically_with_its_sde_window(tmp_path):
    """A tiny SD3 with a LoRA and MixGRPO's sliding window: stopping after iteration 2 and resuming
    to 4 ends exactly where 4 uninterrupted iterations end (the window's position comes back too)."""
    from tiny_models import build_tiny_sd3

    model = build_tiny_sd3(tmp_path / "sd3")
    flow = [
        *SETTINGS,
        f"model.pretrained={model}",
        "model.trainable=lora",
        "sample.eta=0.7",
        "sample.sde_window=1",  # of 3 steps, moving every iteration: iterations 1-4 train steps 0, 1, 2, 0
        "sample.sde_window_shift_every=1",
    ]
    reference = train(load_config("tiny", [*flow, "train.num_iterations=4", f"train.output_dir={tmp_path / 'ref'}"]))
    run_dir = train(load_config("tiny", [*flow, "train.num_iterations=2", f"train.output_dir={tmp_path / 'cut'}"]))
    assert main(["train", "--resume", str(run_dir), "--set", "train.num_iterations=4"]) == 0

    def lora(run):
        checkpoint = run / "checkpoints" / "iter_000004"
        return {
            **load_file(checkpoint / "pytorch_lora_weights.safetensors"),
            **{f"pen.{k}": v for k, v in load_file(checkpoint / "pen" / "adapter_model.safetensors").items()},
        }

    assert_bit_equal(lora(run_dir), lora(reference))
