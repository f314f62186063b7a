"""Evaluation reports: several models or runs side by side on one prompt set (``parrot evaluate``).

For each entry: every reward's mean ± 95% CI (alignment scored against the original prompt, as the
paper does), their average, and the per-prompt hypervolume: for each prompt, the volume of reward
space its images dominate above a reference point, averaged over prompts. The reference is each
reward's 10th percentile over the first entry's images (the base model, or "before" training)
unless one is given. The rewards' correlation among one prompt's images says whether the rewards
trade off at all (a negative pair) or rise together. Pairwise front plots show every image per
pair of rewards, each entry's non-dominated images marked and its front drawn, arrows between the
entries' means. Written as
report.md, a self-contained report.html (images embedded as data URIs, figures as SVG),
results.json, PNGs and SVGs; figures come from ``plots.py``.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from .evaluate import Evaluation
from .images import save_grid
from .pareto import lower_quantile_reference, per_prompt_hypervolume
from .plots import front_plot, save
from .stats import summarize, within_group_correlation


@dataclass
class Entry:
    label: str  # how the entry is named in tables and plots
    source: str  # the model id or run checkpoint it came from
    evaluation: Evaluation


def write_report(
    entries: list[Entry],
    out: str | Path,
    reference: list[float] | None,
    prompts_label: str,
    images_per_prompt: int,
    extra: list[tuple[str, Figure]] = (),
) -> dict:
    """Write report.md, report.html, results.json, grid_*.png and front_*.png/.svg into ``out``;
    ``extra`` adds (caption, figure) pairs such as training curves. ``reference``: the
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
    results = {
        "prompts": prompts_label,
        "images_per_prompt": images_per_prompt,
        "hypervolume_reference": reference,
        "hypervolume_reference_is": how,
        "entries": [],
    }
    pictures: list[tuple[str, Path]] = []  # (caption, PNG); the HTML embeds a figure's SVG when there is one
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
                "within_prompt_correlation": _correlation(ev),
                "images": len(ev.prompts),
                "grid": grid.name,
                "examples": [
                    {"prompt": p, "expansion": e}
                    for p, e in list(zip(ev.prompts, ev.expansions))[:: max(1, images_per_prompt)][:4]
                ],
            }
        )
    labels, scores = [e.label for e in entries], [e.evaluation.scores for e in entries]
    for i, j in _pairs(names):
        png, _ = save(front_plot(labels, scores, names, i, j), out / f"front_{names[i]}_{names[j]}.png")
        pictures.append(
            (
                f"{names[i]} vs {names[j]}: every image, each entry's front marked, arrows between the entries' means",
                png,
            )
        )
    for n, (caption, figure) in enumerate(extra):
        png, _ = save(figure, out / f"figure_{n}.png")
        pictures.append((caption, png))
    results["plots"] = [p.name for _, p in pictures]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    markdown = _markdown(results, names, pictures)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(_html(results, names, pictures))
    return results


def _correlation(ev: Evaluation) -> list[list[float | None]]:
    """The rewards' correlation among one prompt's images (None where a reward is constant within
    every prompt): negative pairs are the trade-offs a Pareto front can keep and a weighted sum
    averages away; all positive, and Pareto selection has nothing to add (docs/RESULTS.md)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = within_group_correlation(ev.scores.double().numpy(), ev.prompts)
    return [[round(float(v), 3) if np.isfinite(v) else None for v in row] for row in matrix]


def _pairs(names: list[str]) -> list[tuple[int, int]]:
    return list(combinations(range(len(names)), 2))


def _correlation_table(results: dict, names: list[str]) -> list[list[str]]:
    """Header, then one row per entry: each pair of rewards' within-prompt correlation."""
    cell = lambda v: "—" if v is None else f"{v:+.2f}"
    return [["entry", *(f"{names[i]}–{names[j]}" for i, j in _pairs(names))]] + [
        [entry["label"], *(cell(entry["within_prompt_correlation"][i][j]) for i, j in _pairs(names))]
        for entry in results["entries"]
    ]


CORRELATION_NOTE = (
    "Within-prompt reward correlation: each prompt's mean removed, then the correlation of each pair of "
    "rewards over the images; a negative pair is a trade-off among one prompt's images, which Pareto "
    "selection keeps and a weighted sum averages away."
)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines: the first column left, the numbers right-aligned."""
    return ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
            f"Prompts: {results['prompts']}, {results['images_per_prompt']} images each; rewards scored against the "
            "original prompt. "
            "± is the 95% Student-t interval over images (optimistic: images of one prompt are correlated). "
            "HV per prompt: the reward-space volume one prompt's images dominate above the reference point "
            f"{_rounded(results['hypervolume_reference'])} "
            f"({results['hypervolume_reference_is']}), averaged over prompts; higher means more of the trade-off "
            "covered for each request."
        ),
        "",
        *_markdown_table(header, _table_rows(results, names)),
    ]
    if len(names) > 1:
        pairs, *rows = _correlation_table(results, names)
        lines += ["", CORRELATION_NOTE, "", *_markdown_table(pairs, rows)]
    for entry in results["entries"]:
        lines += ["", f"## {entry['label']}", f"source: `{entry['source']}`", ""]
        lines += [f"- {e['prompt']!r} → {e['expansion']!r}" for e in entry["examples"]]
    lines += [""] + [f"![{caption}]({path.name})" for caption, path in pictures]
    return "\n".join(lines) + "\n"


def _rounded(point: list[float]) -> list[float]:
    return [round(v, 4) for v in point]


def _data_uri(png: Path) -> str:
    """The picture as a data URI: its SVG twin when it has one (a figure), else the PNG (a grid)."""
    svg = png.with_suffix(".svg")
    path, kind = (svg, "svg+xml") if svg.is_file() else (png, "png")
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode()


def _html(results: dict, names: list[str], pictures: list[tuple[str, Path]]) -> str:
    esc = html.escape
    rewards = _html_table(["entry", *names, "average", "HV per prompt"], _table_rows(results, names))
    correlation = ""
    if len(names) > 1:
        pairs, *rows = _correlation_table(results, names)
        correlation = f"<p>{esc(CORRELATION_NOTE)}</p>{_html_table(pairs, rows)}"
    figures = "".join(
        f'<figure><img src="{_data_uri(path)}" alt="{esc(caption)}" '
        f'data-file="{esc(path.name)}"><figcaption>{esc(caption)}</figcaption></figure>'
        for caption, path in pictures
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Evaluation report</title>'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid "
        "#ccc;padding:4px 8px;text-align:right}"
        "figure{display:inline-block;margin:8px}img{image-rendering:pixelated;max-width:480px}</style></head><body>"
        f"<h1>Evaluation report</h1><p>Prompts: {esc(str(results['prompts']))}, {results['images_per_prompt']} "
        "images each; ± is the 95% interval over images; "
        "HV per prompt: the reward-space volume one prompt's images dominate above "
        f"{esc(str(_rounded(results['hypervolume_reference'])))} ({esc(results['hypervolume_reference_is'])}), "
        "averaged over prompts.</p>"
        f"{rewards}{correlation}{figures}</body></html>\n"
    )
