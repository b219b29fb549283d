"""Value plugging: the option that fills a prediction's literals with the gold query's values.

Off by default (it hides wrong values); it exists to compare with numbers published that way, such as
DB-GPT-Hub's (test-suite-sql-eval's `--plug_value`): a prediction counts as correct if any way of filling its
literal slots with gold literals gives the gold result.
"""

from __future__ import annotations

import itertools
import re

# string literals (single or double quoted) and numbers that are not part of a name such as T1 or col2
_LITERAL = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?![\w.])""")
MAX_ALTERNATIVES = 1000


def plug_gold_values(gold: str, pred: str, limit: int = MAX_ALTERNATIVES) -> list[str]:
    """Predictions with every assignment of gold literals to the prediction's literal slots (at most `limit`)."""
    values = sorted({m.group() for m in _LITERAL.finditer(gold)})
    slots = [m.span() for m in _LITERAL.finditer(pred)]
    if not values or not slots:
        return []
    alternatives = []
    for combo in itertools.islice(itertools.product(values, repeat=len(slots)), limit):
        parts, last = [], 0
        for (start, end), value in zip(slots, combo, strict=True):
            parts += [pred[last:start], value]
            last = end
        alternatives.append("".join(parts) + pred[last:])
    return alternatives
