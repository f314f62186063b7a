import pytest

from parrot_t2i.config import Config, ConfigError, load_config, preset_names


def test_defaults_validate_and_presets_load():
    assert isinstance(load_config(), Config)
    assert load_config("mini") == load_config()  # the preset spells out the default job
    assert "tiny" in preset_names()
    for name in preset_names():
        load_config(f"configs/{name}.yaml")
    tiny = load_config("tiny")
    assert tiny.model.trainable == "full" and [r.name for r in tiny.rewards] == ["brightness"]


def test_overrides_parse_yaml_values_including_bare_exponents():
    config = load_config(
        "tiny",
        [
            "train.learning_rate=1e-5",
            "sample.eta=0.5",
            "rewards=[brightness, colorfulness]",
            "objective.weights=[0.7, 0.3]",
            "objective.name=weighted_sum",
        ],
    )
    assert config.train.learning_rate == 1e-5 and config.sample.eta == 0.5
    assert [r.name for r in config.rewards] == ["brightness", "colorfulness"]
    config = load_config(None, ["rewards=[{name: 'mymod:fn', args: {scale: 2}}]"])
    assert config.rewards[0].args == {"scale": 2}
    # YAML 1.1 reads a bare `no` as false: an option spelled "no" still means "no".
    assert load_config("sd15-paper", ["train.mixed_precision=no"]).train.mixed_precision == "no"


@pytest.mark.parametrize(
    "override, message",
    [
        (["train.lr=1"], "unknown config key 'train.lr' (did you mean 'train.learning_rate'"),
        (["train.zzz=1"], "unknown config key 'train.zzz'; valid keys here: adam_beta1"),
        (["train.learning_rat=1e-3"], "did you mean 'train.learning_rate'"),
        (["trian.seed=1"], "unknown config key 'trian' (did you mean 'train'"),
        (["sample.eta=0"], "sample.eta must be in (0, 1]"),
        (["train.learning_rate=-1"], "train.learning_rate must be > 0"),
        (["sample.num_inference_steps=abc"], "sample.num_inference_steps must be an integer"),
        (["model.trainable=everything"], "model.trainable must be one of 'cross_attention', 'lora', 'full'"),
        (
            ["objective.name=single", "objective.reward=nope"],
            "objective.reward must name one of the configured rewards",
        ),
        (["objective.weights=[1.0]"], "objective.weights needs one weight per reward"),
        (["train.num_inner_epochs=2"], "needs train.clip_range"),
        (["rewards=[]"], "at least one reward"),
        (["novalue"], "must look like key=value"),
        (["prompts.identifier_template=<r>"], "must contain '{k}'"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, override)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listy)
