"""Prompt sets: plain text (one prompt per line), JSONL, the PartiPrompts TSV, or a packaged set.

- ``builtin:NAME``: the mini world's packaged sets (``builtin:mini-train``, ``builtin:mini-heldout``).
- ``*.tsv``: PartiPrompts' format, a header with a ``Prompt`` column (plus ``Category``,
  ``Challenge``, ``Note``). A selector after ``#`` keeps matching rows only, e.g.
  ``PartiPrompts.tsv#Category=Animals`` or ``PartiPrompts.tsv#Challenge=Basic``.
- ``*.jsonl``: one JSON object per line with a ``prompt`` field (or a bare JSON string).
- anything else: one prompt per line; blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .builtin import prompt_set, prompt_sets
from .config import ConfigError


def read_prompt_file(spec: str, key: str) -> list[str]:
    """The prompts of ``spec``; ``key`` names the setting in error messages."""
    spec, _, selector = spec.partition("#") if not spec.startswith("builtin:") else (spec, "", "")
    if spec.startswith("builtin:"):
        path = prompt_set(spec)
        if path is None:
            raise ConfigError(f"{key}: unknown prompt set {spec!r} (packaged: {', '.join(prompt_sets())})")
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"{key} {spec!r} does not exist")
    if selector and path.suffix != ".tsv":
        raise ConfigError(f"{key} {spec!r}: a '#column=value' selector works with PartiPrompts .tsv files only")
    if path.suffix == ".tsv":
        prompts = _read_tsv(path, selector, key)
    elif path.suffix == ".jsonl":
        prompts = _read_jsonl(path, key)
    else:
        lines = [line.strip() for line in path.read_text().splitlines()]
        prompts = [line for line in lines if line and not line.startswith("#")]
    if not prompts:
        raise ConfigError(f"{key} {spec!r}{' #' + selector if selector else ''} holds no prompts")
    return prompts


def _read_tsv(path: Path, selector: str, key: str) -> list[str]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    columns = list(rows[0]) if rows else []
    if rows and "Prompt" not in columns:
        raise ConfigError(f"{key} {str(path)!r}: a PartiPrompts TSV needs a 'Prompt' column (found {columns})")
    if selector:
        column, sep, value = selector.partition("=")
        if not sep or column not in columns:
            raise ConfigError(
                f"{key} {str(path)!r}: selector '#{selector}' must be COLUMN=VALUE with a column of {columns}"
            )
        rows = [row for row in rows if (row[column] or "").strip() == value.strip()]
    return [row["Prompt"].strip() for row in rows if (row["Prompt"] or "").strip()]


def _read_jsonl(path: Path, key: str) -> list[str]:
    prompts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompts.append((row if isinstance(row, str) else row["prompt"]).strip())
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ConfigError(
                f'{key} {str(path)!r} line {number}: expected {{"prompt": ...}} or a JSON string, got {line[:60]!r}'
            ) from None
    return prompts
