"""The human-readable evaluation report (Markdown and HTML from the same tables)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqltune.artifacts import atomic_write_text

MAX_EXAMPLES = 20


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _tables(metrics: dict[str, Any], rows: list[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]]]]:
    levels = metrics["levels"]
    scores = [["count (EX)", *(_fmt(metrics["counts"]["ex"][lv]) for lv in levels)]]
    scores.append(["execution (EX)", *(_fmt(metrics["ex"][lv]) for lv in levels)])
    scores.append(["count (EM)", *(_fmt(metrics["counts"]["em"][lv]) for lv in levels)])
    scores.append(["exact match (EM)", *(_fmt(metrics["em"][lv]) for lv in levels)])
    if "ves" in metrics:
        scores.append(["R-VES", *(_fmt(metrics["ves"].get(lv)) for lv in levels)])
    tables = [("Scores per level", ["", *levels], scores)]
    if "partial" in metrics:
        partial = metrics["partial"]
        components = list(partial["all"])
        f1 = [[c, *(_fmt(partial[lv][c]["f1"]) if lv in partial else "-" for lv in levels)] for c in components]
        tables.append(("Exact-match components (F1)", ["", *levels], f1))
    errors = [[category, str(count)] for category, count in metrics["errors"].items()]
    tables.append(("Error categories (skipped questions are not counted as wrong)", ["category", "questions"], errors))
    failures = [r for r in rows if r["ex"] == 0 or r["em"] == 0][:MAX_EXAMPLES]
    examples = [
        [
            str(r["idx"]),
            r["db_id"],
            str(r["hardness"]),
            _fmt(r["ex"]),
            _fmt(r["em"]),
            r["error"] or "",
            r["sql"],
            r["gold"],
        ]
        for r in failures
    ]
    tables.append(
        (
            f"Failures (first {MAX_EXAMPLES})",
            ["idx", "db", "level", "EX", "EM", "error", "prediction", "gold"],
            examples,
        )
    )
    return tables


def _markdown(title: str, header: Sequence[str], body: list[list[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([f"## {title}", "", line(header), line(["---"] * len(header)), *map(line, body), ""])


def _html(title: str, header: Sequence[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<h2>{html.escape(title)}</h2>\n<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>\n"


def write_reports(out: Path, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Write report.md and report.html into `out`."""
    tables = _tables(metrics, rows)
    summary = f"{metrics['n']} questions, {metrics['skipped']['total']} skipped."
    atomic_write_text(
        out / "report.md", "# Evaluation\n\n" + summary + "\n\n" + "\n".join(_markdown(*t) for t in tables)
    )
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-family:monospace}"
    body = "".join(_html(*t) for t in tables)
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation</title><style>{style}</style>"
    atomic_write_text(
        out / "report.html", page + f"</head><body><h1>Evaluation</h1><p>{summary}</p>{body}</body></html>\n"
    )
