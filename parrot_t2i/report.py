"""Evaluation reports: several models or runs side by side on one prompt set (``parrot evaluate``).

For each entry: every reward's mean ± 95% CI (alignment scored against the original prompt, as the
paper does), their average, and the per-prompt hypervolume: for each prompt, the volume of reward
space its images dominate above a reference point, averaged over prompts. The reference is each
reward's 10th percentile over the first entry's images (the base model, or "before" training)
unless one is given. Pairwise scatter plots show every image per pair of rewards with each
entry's non-dominated images outlined. Written as report.md, a self-contained report.html (images
embedded as data URIs), results.json and PNGs. Plots are drawn with PIL, no plotting library.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .evaluate import Evaluation
from .images import save_grid
from .pareto import lower_quantile_reference, non_dominated, per_prompt_hypervolume
from .stats import summarize

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)]


@dataclass
class Entry:
    label: str  # how the entry is named in tables and plots
    source: str  # the model id or run checkpoint it came from
    evaluation: Evaluation


def scatter_plot(entries: list[Entry], i: int, j: int, size: int = 360, margin: int = 44) -> Image.Image:
    """Reward i (x) against reward j (y) for every image of every entry; the non-dominated images of
    each entry (in these two rewards) drawn larger and outlined."""
    names = entries[0].evaluation.reward_names
    both = torch.cat([e.evaluation.scores[:, [i, j]] for e in entries])
    lo, hi = both.min(0).values, both.max(0).values
    span = (hi - lo).clamp(min=1e-9)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    inner = size - 2 * margin
    draw.rectangle([margin, margin, size - margin, size - margin], outline=(0, 0, 0))

    def at(point: Tensor) -> tuple[float, float]:
        x, y = ((point - lo) / span).tolist()
        return margin + x * inner, size - margin - y * inner

    for n, entry in enumerate(entries):
        colour = COLOURS[n % len(COLOURS)]
        pair = entry.evaluation.scores[:, [i, j]]
        front = non_dominated(pair)
        for point, on_front in zip(pair, front.tolist()):
            x, y = at(point)
            r = 4 if on_front else 2
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0) if on_front else None)
        draw.text((size // 2, 4 + 12 * n), entry.label, fill=colour)  # legend, top right
    draw.text((margin, size - margin + 6), f"{names[i]}  [{lo[0]:.3g}, {hi[0]:.3g}]", fill=(0, 0, 0))
    draw.text((4, margin - 14), f"{names[j]}  [{lo[1]:.3g}, {hi[1]:.3g}]", fill=(0, 0, 0))
    return image


def line_plot(series: dict[str, list[float]], title: str, size: tuple[int, int] = (520, 320), margin: int = 44) -> Image.Image:
    """Curves over iterations (x = 1..n), one colour per series, y range of all values, legend top right."""
    values = [v for ys in series.values() for v in ys if math.isfinite(v)]
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rectangle([margin, margin, w - margin, h - margin], outline=(0, 0, 0))
    draw.text((margin, 8), title, fill=(0, 0, 0))
    if not values:
        return image
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    n = max(len(ys) for ys in series.values())
    for k, (name, ys) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        points = [(margin + (w - 2 * margin) * (i / max(1, n - 1)), h - margin - (h - 2 * margin) * ((y - lo) / span)) for i, y in enumerate(ys) if math.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        draw.text((w // 2, 8 + 12 * (k + 1)), name, fill=colour)
    draw.text((margin, h - margin + 6), f"iteration 1 … {n}", fill=(0, 0, 0))
    draw.text((4, margin - 14), f"[{lo:.3g}, {hi:.3g}]", fill=(0, 0, 0))
    return image


def write_report(entries: list[Entry], out: str | Path, reference: list[float] | None, prompts_label: str, images_per_prompt: int, extra: list[tuple[str, Image.Image]] = ()) -> dict:
    """Write report.md, report.html, results.json, grid_*.png and front_*.png into ``out``;
    ``extra`` adds (caption, image) figures such as training curves. ``reference``: the
    hypervolume reference point; None: each reward's 10th percentile over the first entry."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = entries[0].evaluation.reward_names
    if reference is None:
        reference = lower_quantile_reference(entries[0].evaluation.scores).tolist()
        how = f"each reward's 10% quantile over the images of {entries[0].label!r}"
    else:
        how = "given"
    ref = torch.tensor(reference, dtype=torch.float64)
    results = {"prompts": prompts_label, "images_per_prompt": images_per_prompt, "hypervolume_reference": reference, "hypervolume_reference_is": how, "entries": []}
    pictures: list[tuple[str, Path]] = []
    for n, entry in enumerate(entries):
        ev = entry.evaluation
        grid = save_grid(ev.images[: 8 * images_per_prompt], out / f"grid_{n}.png", ncols=images_per_prompt)
        pictures.append((f"{entry.label}: the first prompts, one row each", grid))
        results["entries"].append(
            {
                "label": entry.label,
                "source": entry.source,
                "rewards": summarize(ev.scores, names),
                "hypervolume_per_prompt": per_prompt_hypervolume(ev.scores, ev.prompts, ref),
                "images": len(ev.prompts),
                "grid": grid.name,
                "examples": [{"prompt": p, "expansion": e} for p, e in list(zip(ev.prompts, ev.expansions))[:: max(1, images_per_prompt)][:4]],
            }
        )
    for i, j in combinations(range(len(names)), 2):
        path = out / f"front_{names[i]}_{names[j]}.png"
        scatter_plot(entries, i, j).save(path)
        pictures.append((f"{names[i]} vs {names[j]}", path))
    for n, (caption, figure) in enumerate(extra):
        path = out / f"figure_{n}.png"
        figure.save(path)
        pictures.append((caption, path))
    results["plots"] = [p.name for _, p in pictures]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    markdown = _markdown(results, names, pictures)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(_html(results, names, pictures))
    return results


def _table_rows(results: dict, names: list[str]) -> list[list[str]]:
    rows = []
    for entry in results["entries"]:
        cells = [f"{entry['rewards'][n]['mean']:.4f} ± {entry['rewards'][n]['ci95']:.4f}" for n in [*names, "average"]]
        rows.append([entry["label"], *cells, f"{entry['hypervolume_per_prompt']:.4g}"])
    return rows


def _markdown(results: dict, names: list[str], pictures: list[tuple[str, Path]]) -> str:
    header = ["entry", *names, "average", "HV per prompt"]
    lines = [
        "# Evaluation report",
        "",
        (
            f"Prompts: {results['prompts']}, {results['images_per_prompt']} images each; rewards scored against the original prompt. "
            "± is the 95% Student-t interval over images (optimistic: images of one prompt are correlated). "
            f"HV per prompt: the reward-space volume one prompt's images dominate above the reference point {_rounded(results['hypervolume_reference'])} "
            f"({results['hypervolume_reference_is']}), averaged over prompts; higher means more of the trade-off covered for each request."
        ),
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _table_rows(results, names)]
    for entry in results["entries"]:
        lines += ["", f"## {entry['label']}", f"source: `{entry['source']}`", ""]
        lines += [f"- {e['prompt']!r} → {e['expansion']!r}" for e in entry["examples"]]
    lines += [""] + [f"![{caption}]({path.name})" for caption, path in pictures]
    return "\n".join(lines) + "\n"


def _rounded(point: list[float]) -> list[float]:
    return [round(v, 4) for v in point]


def _data_uri(path: Path) -> str:
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _html(results: dict, names: list[str], pictures: list[tuple[str, Path]]) -> str:
    esc = html.escape
    header = "".join(f"<th>{esc(h)}</th>" for h in ["entry", *names, "average", "HV per prompt"])
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in _table_rows(results, names))
    figures = "".join(f'<figure><img src="{_data_uri(path)}" alt="{esc(caption)}" data-file="{esc(path.name)}"><figcaption>{esc(caption)}</figcaption></figure>' for caption, path in pictures)
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Evaluation report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "figure{display:inline-block;margin:8px}img{image-rendering:pixelated;max-width:480px}</style></head><body>"
        f"<h1>Evaluation report</h1><p>Prompts: {esc(str(results['prompts']))}, {results['images_per_prompt']} images each; "
        f"± is the 95% interval over images; HV per prompt: the reward-space volume one prompt's images dominate above "
        f"{esc(str(_rounded(results['hypervolume_reference'])))} ({esc(results['hypervolume_reference_is'])}), averaged over prompts.</p>"
        f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>{figures}</body></html>\n"
    )
