"""Figures for reports and runs, drawn with matplotlib's object API (``Figure`` without pyplot: no
backend or global figure state, and no display needed).

- ``reward_curves``: one panel per reward over training iterations, the raw per-iteration means
  faint and their exponential moving average on top, as RL training curves are usually shown.
- ``front_plot``: two rewards of every image of each entry (e.g. before and after training), each
  entry's non-dominated images marked and joined by its front's staircase, an arrow from each
  entry's mean to the next entry's.

Every figure is saved as PNG and SVG (``save``); reports embed the SVG.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from .pareto import non_dominated

COLOURS = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def ema(values: list[float], alpha: float = 0.2) -> np.ndarray:
    """Exponential moving average s_t = α·x_t + (1 − α)·s_{t−1}, s_1 = x_1; non-finite values carry
    the previous average forward (a skipped iteration does not drag the curve to 0)."""
    out, state = np.empty(len(values)), np.nan
    for t, x in enumerate(values):
        if np.isfinite(x):
            state = x if not np.isfinite(state) else alpha * x + (1 - alpha) * state
        out[t] = state
    return out


def reward_curves(series: dict[str, list[float]], title: str, alpha: float = 0.2, overlay: bool = False) -> Figure:
    """Per-iteration means (raw values faint, EMA(α) solid): one panel per series (a reward each),
    or all series in one panel with ``overlay`` (runs compared on one measure)."""
    panels = 1 if overlay else len(series)
    fig = Figure(figsize=(3.4 * panels + (1.6 if overlay else 0), 2.8))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for k, (name, values) in enumerate(series.items()):
        ax = axes[0 if overlay else k]
        steps = np.arange(1, len(values) + 1)
        colour = COLOURS[k % len(COLOURS)]
        ax.plot(steps, values, color=colour, alpha=0.3, linewidth=1)
        ax.plot(steps, ema(values, alpha), color=colour, linewidth=2, label=name if overlay else f"EMA, α = {alpha}")
        if not overlay:
            ax.set_title(name, fontsize=10)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean reward")
    axes[0].legend(fontsize=8, title=f"EMA, α = {alpha}; faint: per iteration" if overlay else None, title_fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def front_plot(labels: list[str], scores: list[Tensor], names: list[str], i: int, j: int) -> Figure:
    """Reward i (x) against reward j (y): every image of each entry, its non-dominated images (in
    these two rewards) enlarged with a black edge and joined by the front's staircase; arrows
    from each entry's mean to the next one's (before → after)."""
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.subplots()
    means = []
    for k, (label, entry_scores) in enumerate(zip(labels, scores)):
        pair = entry_scores[:, [i, j]].float()
        pair = pair[np.isfinite(pair.numpy()).all(1)]
        front = non_dominated(pair)
        colour = COLOURS[k % len(COLOURS)]
        ax.scatter(pair[~front, 0], pair[~front, 1], s=10, color=colour, alpha=0.45, linewidths=0)
        ax.scatter(
            pair[front, 0],
            pair[front, 1],
            s=34,
            color=colour,
            edgecolors="black",
            linewidths=0.8,
            label=f"{label} (front: {int(front.sum())})",
        )
        staircase = pair[front][pair[front, 0].argsort(descending=True)]
        ax.step(staircase[:, 0], staircase[:, 1], where="post", color=colour, linewidth=1)
        means.append(pair.mean(0).numpy())
    for start, end in zip(means, means[1:]):
        ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "color": "black", "linewidth": 1.2})
    ax.set_xlabel(names[i])
    ax.set_ylabel(names[j])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str | Path) -> tuple[Path, Path]:
    """Write ``path`` as PNG and the same figure as SVG beside it; returns (png, svg)."""
    png = Path(path).with_suffix(".png")
    svg = png.with_suffix(".svg")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    fig.savefig(svg)
    return png, svg
