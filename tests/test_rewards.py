import sys
import types

import pytest
import torch

from parrot_t2i.config import ConfigError, RewardSpec
from parrot_t2i.rewards import REGISTRY, RewardError, build_reward, score_all
from parrot_t2i.rewards.image_stats import jpeg_kilobytes


def test_registry_has_the_image_statistics():
    assert {"brightness", "colorfulness", "jpeg_compressibility", "jpeg_incompressibility"} <= set(REGISTRY)


def test_brightness_and_colorfulness_by_hand():
    grey = torch.full((1, 3, 4, 4), 0.25)
    half_red = torch.zeros(1, 3, 2, 2)
    half_red[0, 0, :, :1] = 1.0  # left column pure red, right column black
    images = torch.cat([grey, torch.nn.functional.interpolate(half_red, size=4)])
    assert build_reward("brightness")(images, ["", ""]).tolist() == pytest.approx([0.25, 1 / 6])
    # grey: rg = yb = 0 -> 0.
    # half red: rg ∈ {1, 0}, yb ∈ {0.5, 0} -> σ = sqrt(.25 + .0625), μ = sqrt(.25 + .0625).
    expected = (0.25 + 0.0625) ** 0.5 * 1.3
    assert build_reward("colorfulness")(images, ["", ""]).tolist() == pytest.approx([0.0, expected])


def test_jpeg_rewards_rank_flat_above_noise():
    flat = torch.full((1, 3, 32, 32), 0.5)
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    images = torch.cat([flat, noise])
    sizes = jpeg_kilobytes(images)
    assert sizes[0] < sizes[1]
    assert build_reward("jpeg_compressibility")(images, ["", ""]).tolist() == pytest.approx((-sizes).tolist())
    assert build_reward({"name": "jpeg_incompressibility", "args": {"quality": 50}})(images, ["", ""])[1] < sizes[1]


def test_unknown_reward_lists_known_names():
    from parrot_t2i.rewards import REGISTRY

    with pytest.raises(ConfigError, match="unknown reward 'brightnes'; known rewards: brightness, ") as err:
        build_reward("brightnes")
    assert f"known rewards: {', '.join(sorted(REGISTRY))} (or 'module:function')" in str(err.value)
    with pytest.raises(ConfigError, match="bad args"):
        build_reward(RewardSpec("brightness", {"gamma": 2}))


def test_user_callables_by_module_and_function(monkeypatch):
    module = types.ModuleType("my_rewards")
    module.mean_red = lambda images, prompts: images[:, 0].mean(dim=(1, 2))
    module.make_scaled = lambda scale: lambda images, prompts: [scale * len(p) for p in prompts]
    monkeypatch.setitem(sys.modules, "my_rewards", module)
    images = torch.rand(2, 3, 4, 4)
    reward = build_reward("my_rewards:mean_red")
    assert reward.name == "my_rewards:mean_red"
    torch.testing.assert_close(reward(images, ["a", "b"]), images[:, 0].mean(dim=(1, 2)))
    scaled = build_reward({"name": "my_rewards:make_scaled", "args": {"scale": 2.0}})
    assert scaled(images, ["ab", "abc"]).tolist() == [4.0, 6.0]
    with pytest.raises(ConfigError, match="cannot import module"):
        build_reward("no_such_module_xyz:f")
    with pytest.raises(ConfigError, match="has no attribute"):
        build_reward("my_rewards:missing")
    bad = build_reward("my_rewards:make_scaled")  # a factory named without args is called as the reward
    with pytest.raises(TypeError):
        bad(images, ["a", "b"])
    module.always_two = lambda images, prompts: [1.0, 2.0]
    with pytest.raises(RewardError, match=r"returned scores of shape \(2,\) for 3 images"):
        score_all([build_reward("my_rewards:always_two")], torch.rand(3, 3, 4, 4), ["a", "b", "c"])
    with pytest.raises(RewardError, match="'my_rewards:make_scaled' raised TypeError") as info:
        score_all([bad], images, ["a", "b"])
    assert isinstance(info.value.__cause__, TypeError)  # the user's own exception, traceback and all
