"""The reward protocol and registry.

A reward is anything with a ``name`` and a batched, gradient-free
``__call__(images: Tensor[B, 3, H, W] in [0, 1], prompts: list[str]) -> Tensor[B]`` (higher is
better). Built-in rewards register their class under a name; users point at their own code with
``"module:function"`` — the only way configuration can run user code.

One construction pattern for every built-in reward: ``Reward.from_pretrained(**args, device=...,
cache=...)`` loads what the reward needs, there and then, onto ``device``; ``__init__`` takes the
loaded parts. Nothing is cached process-wide: the caller owns the ``cache`` (a plain dict of loaded
components keyed by their loading arguments). :func:`build_rewards` passes one dict to a whole list,
so the paper's aesthetic and sentiment rewards, both on CLIP ViT-L/14, share one copy; callers that
build rewards again and again keep their own dict, and dropping it frees the models.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

from ..config import ConfigError, RewardSpec
from ..errors import RewardError


@runtime_checkable
class Reward(Protocol):
    name: str

    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor: ...


REGISTRY: dict[str, type] = {}
T = TypeVar("T")


def register_reward(name: str):
    """Class decorator: ``@register_reward("brightness")``; the class has a ``from_pretrained``."""

    def wrap(factory):
        REGISTRY[name] = factory
        return factory

    return wrap


def load_once(cache: dict | None, key: tuple, load: Callable[[], T]) -> T:
    """``load()``, or what ``cache`` already holds under ``key`` (no cache: always load)."""
    if cache is None:
        return load()
    if key not in cache:
        cache[key] = load()
    return cache[key]


class WeightFree:
    """Mixin for rewards with nothing to load: ``from_pretrained`` is the constructor."""

    @classmethod
    def from_pretrained(cls, *, device: str | torch.device = "cpu", cache: dict | None = None, **args):
        return cls(**args)


class CallableReward:
    """Adapts a plain function ``fn(images, prompts) -> Tensor[B] | sequence`` to the protocol."""

    def __init__(self, name: str, fn: Callable[[Tensor, list[str]], Any]):
        self.name, self.fn = name, fn

    @torch.no_grad()
    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        return torch.as_tensor(self.fn(images, prompts), dtype=torch.float32).reshape(-1)


def score_all(rewards: list[Reward], images: Tensor, prompts: list[str]) -> Tensor:
    """(B, K) float32 scores of every reward on ``images``, on their device; every reward is checked
    for one score per image. A reward that raises becomes a :class:`RewardError` naming it, with
    its own exception (and traceback) as the cause."""
    columns = []
    for reward in rewards:
        try:
            scores = reward(images, prompts)
        except Exception as err:  # user code: anything can come out of it
            detail = str(err).splitlines()[0] if str(err) else ""
            raise RewardError(
                f"reward {reward.name!r} raised {type(err).__name__}{': ' + detail if detail else ''}"
            ) from err
        scores = torch.as_tensor(scores)
        if scores.shape != (len(images),):
            raise RewardError(
                f"reward {reward.name!r} returned scores of shape {tuple(scores.shape)} for {len(images)} images; a "
                f"reward returns one score per image, shape ({len(images)},)"
            )
        columns.append(scores.to(images.device, torch.float32))
    return torch.stack(columns, 1)


def build_reward(
    spec: RewardSpec | str | dict, device: str | torch.device = "cpu", cache: dict | None = None
) -> Reward:
    """A reward from a config entry: a registered name, or ``module:function`` for user code.

    Built-in rewards load onto ``device`` now, sharing what ``cache`` holds. For user code, the
    named object is the reward function itself; when ``args`` are given it is a factory instead,
    called with them to produce the reward (user code places itself: it scores on the images'
    device).
    """
    spec = _spec(spec)
    check_reward(spec)
    if ":" in spec.name:
        obj = _import(spec.name)
        reward = obj(**spec.args) if spec.args else obj
        return reward if isinstance(reward, Reward) else CallableReward(spec.name, reward)
    try:
        return REGISTRY[spec.name].from_pretrained(**spec.args, device=device, cache=cache)
    except TypeError as err:
        raise ConfigError(f"reward {spec.name!r}: bad args {spec.args} ({err})") from None


def _spec(spec: RewardSpec | str | dict) -> RewardSpec:
    if isinstance(spec, str):
        return RewardSpec(name=spec)
    return RewardSpec(**spec) if isinstance(spec, dict) else spec


def check_reward(spec: RewardSpec | str | dict) -> None:
    """A :class:`ConfigError` unless ``spec`` names a registered reward or an importable callable:
    the cheap check, no model loaded, that lets a job refuse a typo before it claims a run folder."""
    spec = _spec(spec)
    if ":" in spec.name:
        _import(spec.name)
    elif spec.name not in REGISTRY:
        raise ConfigError(
            f"unknown reward {spec.name!r}; known rewards: {', '.join(sorted(REGISTRY))} (or 'module:function')"
        )


def build_rewards(specs: list, device: str | torch.device = "cpu") -> list[Reward]:
    """Every reward of ``specs``, built onto ``device`` with one shared cache (one copy per model)."""
    cache: dict = {}
    return [build_reward(spec, device, cache) for spec in specs]


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"reward {target!r}: cannot import module {module_name!r} ({err})") from None
    if not hasattr(module, attr):
        raise ConfigError(f"reward {target!r}: module {module_name!r} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if not callable(obj):
        raise ConfigError(f"reward {target!r} is not callable")
    return obj
