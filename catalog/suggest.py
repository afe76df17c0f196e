"""Close matches for "did you mean …?" hints: one similarity measure for every message that suggests a name.

Similarity is difflib's ratio (matching characters over total length, 0–1). Each caller picks how
many suggestions it shows and how close they must be: a single typo hint wants one close name, a
not-found message may offer a few looser ones. The wording of the hint stays with the caller.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["close_matches"]


def close_matches(
    word: str, choices: Iterable[str], *, n: int = 1, cutoff: float = 0.6, ignore_case: bool = False
) -> list[str]:
    """At most ``n`` of ``choices`` whose similarity to ``word`` is at least ``cutoff``, closest first.

    With ``ignore_case`` the texts are compared lower-cased and a match comes back as ``choices`` spell
    it (of choices that differ only in case, the last).
    """
    if not ignore_case:
        return difflib.get_close_matches(word, list(choices), n=n, cutoff=cutoff)
    spelled = {choice.lower(): choice for choice in choices}
    return [spelled[match] for match in difflib.get_close_matches(word.lower(), list(spelled), n=n, cutoff=cutoff)]
