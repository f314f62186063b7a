"""Experiment trackers: which a run uses, the config they are told, and one offline run into each installed one."""

import importlib.util
import json

import pytest

from parrot_t2i import tracking
from parrot_t2i.config import ConfigError, load_config, parse_report_to
from parrot_t2i.errors import ParrotError


def test_report_to_names_trackers_or_all():
    assert parse_report_to("tensorboard") == ["tensorboard"]
    assert parse_report_to(" wandb, tensorboard,wandb ") == ["wandb", "tensorboard"]
    assert parse_report_to("all") == ["tensorboard", "wandb", "mlflow"]
    with pytest.raises(ConfigError, match="train.report_to names no tracker \\['wandbb'\\]: use all, or a list of"):
        load_config(None, ["train.report_to=tensorboard,wandbb"])
    with pytest.raises(ConfigError, match="train.report_to names no tracker ''"):
        load_config(None, ["train.report_to=''"])


def test_a_named_tracker_that_is_not_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(tracking.AVAILABLE, "wandb", lambda: False)
    monkeypatch.setitem(tracking.AVAILABLE, "mlflow", lambda: False)
    with pytest.raises(
        ParrotError, match="train.report_to names wandb, which is not installed: pip install 'parrot-t2i\\[wandb\\]'"
    ):
        tracking.trackers("tensorboard,wandb")
    assert tracking.trackers("all") == ["tensorboard"]  # all: the installed ones


def test_flat_config_is_dotted_scalars():
    flat = tracking.flat_config(load_config("tiny", ["train.clip_range=null", "train.learning_rate=0.01"]))
    assert flat["train.learning_rate"] == 0.01 and flat["train.clip_range"] == "null"
    assert flat["train.t2i"] is True and flat["model.pretrained"] == "builtin:tiny"
    assert isinstance(flat["rewards"], str) and "brightness" in flat["rewards"]
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())


INSTALLED = [name for name in ("wandb", "mlflow") if importlib.util.find_spec(name)]


@pytest.mark.skipif(not INSTALLED, reason="no optional tracker installed (pip install 'parrot-t2i[trackers]')")
def test_one_offline_run_logs_scalars_config_and_images_to_every_installed_tracker(tmp_path, monkeypatch, train_tiny):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a file store needs no database package
    monkeypatch.chdir(tmp_path)  # nothing written outside the test folder
    run = tmp_path / "run"
    assert train_tiny(run, "train.report_to=all") == 0
    assert list((run / "parrot").glob("events.out.tfevents.*"))  # TensorBoard, always
    if "wandb" in INSTALLED:
        (offline,) = (run / "wandb").glob("offline-run-*")
        (record,) = offline.glob("run-*.wandb")  # the run's protobuf records: config, scalars, media
        assert b"reward/brightness/mean" in record.read_bytes() and b"train.learning_rate" in record.read_bytes()
        assert list((offline / "files" / "media" / "images").glob("samples_1_*.png"))
    if "mlflow" in INSTALLED:
        import mlflow

        (found,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
        assert found.data.params["train.report_to"] == "all" and found.info.run_name == "run"
        assert "reward/brightness/mean" in found.data.metrics
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 1  # the run itself is unchanged by its trackers
