"""Split text into overlapping chunks of at most ``size`` characters, at natural boundaries.

The product contract's ``retrieval.chunk`` gives ``size`` and ``overlap`` (characters). A chunk ends
at the best boundary in the second half of its window, in this order of preference:

1. a paragraph break (a blank line),
2. a line break,
3. the end of a sentence (``.``, ``!`` or ``?``, optional closing quote or bracket, then space),
4. any whitespace,
5. nowhere better: a hard cut at ``size`` characters (one very long token, or text without spaces).

The next chunk starts inside the last ``overlap`` characters of the previous one: at the earliest
sentence start there, else the earliest word start, else exactly ``overlap`` characters back (or at
the end of the previous chunk when ``overlap`` is 0). Chunks never lose text: their spans start at
0, end at ``len(text)``, leave no gap and share at most ``overlap`` characters with their
neighbour. The split depends on the text and the two numbers only (no randomness, no locale), so
an unchanged text yields the same chunks on every run and machine.

Whitespace is kept as it is (a chunk may end with the blank line that ended its paragraph); a text
with no visible character yields no chunk.
"""

from __future__ import annotations

import re

__all__ = ["chunk_spans", "chunk_text"]

# Each pattern matches a separator; a chunk may end (and the next start) right after the match.
_END_BOUNDARIES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n[ \t\r\f\v]*\n\s*"),  # paragraph
    re.compile(r"\n\s*"),  # line
    re.compile(r"[.!?][\"'”’)\]]*\s+"),  # sentence
    re.compile(r"\s+"),  # word
)
_START_BOUNDARIES: tuple[re.Pattern[str], ...] = (_END_BOUNDARIES[2], _END_BOUNDARIES[3])


def chunk_spans(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` character spans of the chunks of ``text`` (see the module docstring).

    Raises:
        ValueError: ``size`` is below 1, ``overlap`` is negative, or ``overlap`` is not below ``size``.
    """
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, not {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be at least 0 and below the chunk size ({size}), not {overlap}")
    n = len(text)
    if not text.strip():
        return []
    spans: list[tuple[int, int]] = []
    start = end = 0
    while True:
        end = _chunk_end(text, start, size, after=end)
        spans.append((start, end))
        if end >= n:
            return spans
        start = _next_start(text, start, end, overlap)


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    """The chunks of ``text`` as strings (see :func:`chunk_spans`).

    Raises:
        ValueError: ``size`` is below 1, ``overlap`` is negative, or ``overlap`` is not below ``size``.
    """
    return [text[start:end] for start, end in chunk_spans(text, size, overlap)]


def _chunk_end(text: str, start: int, size: int, *, after: int) -> int:
    """Where the chunk starting at ``start`` ends: the best boundary in the second half of its window.

    The end lies beyond ``after`` (the previous chunk's end), so no chunk sits inside its predecessor.
    """
    limit = start + size
    if limit >= len(text):
        return len(text)
    earliest = max(start + max(1, size // 2), after + 1)
    window = text[start:limit]
    for pattern in _END_BOUNDARIES:
        best = -1
        for match in pattern.finditer(window):
            position = start + match.end()
            if position >= earliest:
                best = position
        if best >= earliest:
            return best
    return limit


def _next_start(text: str, start: int, end: int, overlap: int) -> int:
    """Where the chunk after ``[start, end)`` starts: a boundary within its last ``overlap`` characters."""
    if overlap == 0:
        return end
    lowest = max(end - overlap, start + 1)
    # Look one character back so that a separator just before ``lowest`` still counts.
    offset = max(lowest - 2, start)
    window = text[offset:end]
    for pattern in _START_BOUNDARIES:
        for match in pattern.finditer(window):
            position = offset + match.end()
            if lowest <= position < end:
                return position
    return lowest
