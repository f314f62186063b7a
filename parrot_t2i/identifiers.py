"""Reward-specific identifiers (paper §3.3): the strings that tell the T2I model which reward a
sample is for.

Training conditions sample i on c_k = identifier_k + " " + ĉ, where k is the reward sample i is
credited with. At inference any subset of identifiers is prefixed ("<reward 1> <reward 3> ĉ");
all of them (the paper's default) asks for every reward at once, a subset steers the trade-off.
"""

from __future__ import annotations

from .errors import ParrotError

DEFAULT_TEMPLATE = "<reward {k}>"


def identifier_strings(
    num_rewards: int, template: str = DEFAULT_TEMPLATE, explicit: list[str] | None = None
) -> list[str]:
    """The K identifiers: ``explicit`` strings when given (one per reward), else ``template``
    formatted with the 1-based reward number k."""
    if explicit:
        if len(explicit) != num_rewards:
            raise ParrotError(f"{len(explicit)} identifier strings given for {num_rewards} rewards")
        return list(explicit)
    return [template.format(k=k) for k in range(1, num_rewards + 1)]


def parse_identifiers(spec: str | int | list[int], num_rewards: int) -> list[int]:
    """ "all", "none" or 1-based reward numbers ("1,3", 2 or [1, 3]) -> sorted 1-based numbers."""
    text = ",".join(map(str, spec)) if isinstance(spec, list) else str(spec).strip().lower()
    if text == "all":
        return list(range(1, num_rewards + 1))
    if text in ("none", ""):
        return []
    chosen = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= num_rewards:
            raise ParrotError(
                f"identifiers {spec!r}: expected 'all', 'none' or reward numbers 1..{num_rewards} separated by "
                "commas (e.g. 1,3)"
            )
        if int(part) in chosen:
            raise ParrotError(f"identifiers {spec!r}: reward {part} is named twice")
        chosen.append(int(part))
    return sorted(chosen)


def choose_identifiers(spec: str | int | list[int], strings: list[str]) -> list[str]:
    """The identifier strings ``spec`` ("all", "none", "1,3", ...) selects from ``strings``, in reward order."""
    return [strings[k - 1] for k in parse_identifiers(spec, len(strings))]


def with_identifiers(text: str, identifiers: list[str]) -> str:
    """``text`` prefixed by ``identifiers`` ("<reward 1> <reward 3> text"); unchanged without any."""
    return " ".join([*identifiers, text])
