"""Evaluation reports: several models or runs side by side on one prompt set (``parrot evaluate``).

For each entry: every reward's mean ± 95% CI (alignment scored against the original prompt, as the
paper does), their average, and the hypervolume of the entry's images' reward vectors against a
stated reference point. Pairwise scatter plots show every image per pair of rewards with each
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
from .pareto import hypervolume, non_dominated
from .stats import summarize

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127)]


@dataclass
class Entry:
    label: str  # how the entry is named in tables and plots
    source: str  # the model id or run checkpoint it came from
    evaluation: Evaluation


def front_hypervolume(scores: Tensor, reference: Tensor) -> float:
    """Hypervolume dominated by the non-dominated images of ``scores`` (B, K) w.r.t. ``reference`` (K,)."""
    finite = scores[torch.isfinite(scores).all(1)]
    return hypervolume(finite[non_dominated(finite)], reference) if len(finite) else 0.0


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


def write_report(entries: list[Entry], out: str | Path, reference: list[float], prompts_label: str, images_per_prompt: int, extra: list[tuple[str, Image.Image]] = ()) -> dict:
    """Write report.md, report.html, results.json, grid_*.png and front_*.png into ``out``;
    ``extra`` adds (caption, image) figures such as training curves."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = entries[0].evaluation.reward_names
    ref = torch.tensor(reference, dtype=torch.float32)
    results = {"prompts": prompts_label, "images_per_prompt": images_per_prompt, "hypervolume_reference": reference, "entries": []}
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
                "hypervolume": front_hypervolume(ev.scores, ref),
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
        rows.append([entry["label"], *cells, f"{entry['hypervolume']:.4g}"])
    return rows


def _markdown(results: dict, names: list[str], pictures: list[tuple[str, Path]]) -> str:
    header = ["entry", *names, "average", "hypervolume"]
    lines = [
        "# Evaluation report",
        "",
        (
            f"Prompts: {results['prompts']}, {results['images_per_prompt']} images each; rewards scored against the original prompt. "
            "± is the 95% Student-t interval over images (optimistic: images of one prompt are correlated). "
            f"Hypervolume of each entry's non-dominated images, reference point {results['hypervolume_reference']}."
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


def _data_uri(path: Path) -> str:
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _html(results: dict, names: list[str], pictures: list[tuple[str, Path]]) -> str:
    esc = html.escape
    header = "".join(f"<th>{esc(h)}</th>" for h in ["entry", *names, "average", "hypervolume"])
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in _table_rows(results, names))
    figures = "".join(f'<figure><img src="{_data_uri(path)}" alt="{esc(caption)}" data-file="{esc(path.name)}"><figcaption>{esc(caption)}</figcaption></figure>' for caption, path in pictures)
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Evaluation report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "figure{display:inline-block;margin:8px}img{image-rendering:pixelated;max-width:480px}</style></head><body>"
        f"<h1>Evaluation report</h1><p>Prompts: {esc(str(results['prompts']))}, {results['images_per_prompt']} images each; "
        f"± is the 95% interval over images; hypervolume reference {esc(str(results['hypervolume_reference']))}.</p>"
        f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>{figures}</body></html>\n"
    )
