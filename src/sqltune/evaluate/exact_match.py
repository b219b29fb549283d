"""Exact set match (EM) with the official Spider rules, and the per-component scores of its `match` report.

Both queries are parsed with `sqltune.sql.parser`; values are dropped, DISTINCT flags are dropped, and columns
joined by foreign keys are identified (as the official evaluator does), then the clauses are compared as sets.
A prediction the parser cannot read is compared as an empty query, so it scores 0.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Any

from sqltune.sql.parser import SQL_OPS, WHERE_OPS, SqlDict, SqlParseError, parse_sql, spider_names
from sqltune.sql.schema import DatabaseSchema

PARTIAL_TYPES = (
    "select",
    "select(no AGG)",
    "where",
    "where(no OP)",
    "group(no Having)",
    "group",
    "order",
    "and/or",
    "IUEN",
    "keywords",
)

EMPTY_SQL: SqlDict = {
    "select": (False, []),
    "from": {"table_units": [], "conds": []},
    "where": [],
    "groupBy": [],
    "having": [],
    "orderBy": [],
    "limit": None,
    **dict.fromkeys(SQL_OPS),
}


@lru_cache(maxsize=512)
def foreign_key_map(schema: DatabaseSchema) -> dict[str, str]:
    """Column id -> the id standing for its foreign-key group (official grouping: first group touching a key)."""
    ids = [
        "__all__" if c.table < 0 else f"__{schema.tables[c.table].lower()}.{c.name.lower()}__" for c in schema.columns
    ]
    groups: list[set[int]] = []
    for a, b in schema.foreign_keys:
        group = next((g for g in groups if a in g or b in g), None)
        if group is None:
            group = set()
            groups.append(group)
        group.update((a, b))
    return {ids[i]: ids[min(group)] for group in groups for i in group}


def _strip_values(sql: SqlDict | None) -> SqlDict | None:
    """Values become None except subqueries, which are stripped too (not in FROM subqueries, as officially)."""
    if sql is None:
        return None

    def conds(condition: list) -> list:
        return [
            c if i % 2 else (*c[:3], *(_strip_values(v) if isinstance(v, dict) else None for v in c[3:5]))
            for i, c in enumerate(condition)
        ]

    out = dict(sql, where=conds(sql["where"]), having=conds(sql["having"]))
    out["from"] = {"table_units": sql["from"]["table_units"], "conds": conds(sql["from"]["conds"])}
    out.update({op: _strip_values(sql[op]) for op in SQL_OPS})
    return out


def _map_columns(sql: SqlDict | None, valid: frozenset[str], fk_map: dict[str, str]) -> SqlDict | None:
    """Foreign-key columns of the FROM tables become their group's id; DISTINCT flags are dropped."""
    if sql is None:
        return None

    def col(unit: tuple | None) -> tuple | None:
        if unit is None:
            return None
        agg, column, _ = unit
        return agg, fk_map.get(column, column) if column in valid else column, None

    def val(unit: tuple) -> tuple:
        return unit[0], col(unit[1]), col(unit[2])

    def conds(condition: list) -> list:
        return [c if i % 2 else (c[0], c[1], val(c[2]), c[3], c[4]) for i, c in enumerate(condition)]

    order = sql["orderBy"]
    return {
        "select": (None, [(agg, val(unit)) for agg, unit in sql["select"][1]]),
        "from": {"table_units": sql["from"]["table_units"], "conds": conds(sql["from"]["conds"])},
        "where": conds(sql["where"]),
        "groupBy": [col(unit) for unit in sql["groupBy"]],
        "orderBy": (order[0], [val(unit) for unit in order[1]]) if order else order,
        "having": conds(sql["having"]),
        "limit": sql["limit"],
        **{op: _map_columns(sql[op], valid, fk_map) for op in SQL_OPS},
    }


def normalize(sql: SqlDict, schema: DatabaseSchema) -> SqlDict:
    """The form EM compares: values, DISTINCT and foreign-key column identities removed."""
    prefixes = {unit[1][:-2] for unit in sql["from"]["table_units"] if unit[0] == "table_unit"}
    valid = frozenset(c for c in spider_names(schema).ids.values() if "." in c and c[: c.index(".")] in prefixes)
    return _map_columns(_strip_values(sql), valid, foreign_key_map(schema))  # type: ignore[return-value]


def parse_normalized(sql: str, schema: DatabaseSchema) -> tuple[SqlDict, bool]:
    """(normalized parse, parsed ok); an unparseable query normalizes as the empty query."""
    try:
        return normalize(parse_sql(sql, schema), schema), True
    except SqlParseError:
        return normalize(EMPTY_SQL, schema), False


def _matched(pred: list, gold: list) -> int:
    """Multiset intersection size: how many pred items find a distinct equal gold item."""
    remaining = list(gold)
    count = 0
    for item in pred:
        if item in remaining:
            remaining.remove(item)
            count += 1
    return count


def _keywords(sql: SqlDict) -> set[str]:
    units = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    connectives = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    found = {k for k, key in (("where", "where"), ("group", "groupBy"), ("having", "having")) if sql[key]}
    if sql["orderBy"]:
        found |= {sql["orderBy"][0], "order"}
    found |= {k for k in ("limit", *SQL_OPS) if sql[k] is not None}
    found |= {"or"} if "or" in connectives else set()
    found |= {"not"} if any(u[0] for u in units) else set()
    found |= {"in"} if any(u[1] == WHERE_OPS.index("in") for u in units) else set()
    return found | ({"like"} if any(u[1] == WHERE_OPS.index("like") for u in units) else set())


def _column_name(column_id: str) -> str:
    return column_id.split(".")[1] if "." in column_id else column_id


def _component_counts(pred: SqlDict, gold: SqlDict) -> dict[str, tuple[int, int, int]]:
    """(gold total, pred total, matched) per component, as the official `eval_partial_match` counts them."""
    select_p, select_g = pred["select"][1], gold["select"][1]
    where_p, where_g = pred["where"][::2], gold["where"][::2]
    group_p = [unit[1] for unit in pred["groupBy"]]
    group_g = [unit[1] for unit in gold["groupBy"]]
    having = int(bool(gold["groupBy"]) and bool(pred["groupBy"]) and group_p == group_g)
    order = int(
        bool(gold["orderBy"])
        and pred["orderBy"] == gold["orderBy"]
        and (pred["limit"] is None) == (gold["limit"] is None)
    )
    connectives_p, connectives_g = set(pred["where"][1::2]), set(gold["where"][1::2])
    nested = [(pred[op], gold[op]) for op in ("intersect", "except", "union")]
    keywords_p, keywords_g = _keywords(pred), _keywords(gold)
    return {
        "select": (len(select_g), len(select_p), _matched(select_p, select_g)),
        "select(no AGG)": (len(select_g), len(select_p), _matched([u[1] for u in select_p], [u[1] for u in select_g])),
        "where": (len(where_g), len(where_p), _matched(where_p, where_g)),
        "where(no OP)": (len(where_g), len(where_p), _matched([u[2] for u in where_p], [u[2] for u in where_g])),
        "group(no Having)": (
            len(group_g),
            len(group_p),
            _matched([_column_name(c) for c in group_p], [_column_name(c) for c in group_g]),
        ),
        "group": (
            int(bool(gold["groupBy"])),
            int(bool(pred["groupBy"])),
            int(having and pred["having"] == gold["having"]),
        ),
        "order": (int(bool(gold["orderBy"])), int(bool(pred["orderBy"])), order),
        # the official code returns (pred, gold) sizes here, swapped: kept, it decides which averages count it
        "and/or": (1, 1, 1) if connectives_p == connectives_g else (len(connectives_p), len(connectives_g), 0),
        "IUEN": (
            sum(g is not None for _, g in nested),
            sum(p is not None for p, _ in nested),
            sum(exact_match(p, g)[0] for p, g in nested if p is not None and g is not None),
        ),
        "keywords": (len(keywords_g), len(keywords_p), len(keywords_p & keywords_g)),
    }


def exact_match(pred: SqlDict, gold: SqlDict) -> tuple[int, dict[str, dict[str, int]]]:
    """(EM 0/1, per-component {acc, rec, f1, label_total, pred_total}) of two normalized queries."""
    partial = {}
    for name, (gold_total, pred_total, matched) in _component_counts(pred, gold).items():
        score = int(gold_total == pred_total and matched == pred_total)
        partial[name] = {"acc": score, "rec": score, "f1": score, "label_total": gold_total, "pred_total": pred_total}
    if any(p["f1"] != 1 for p in partial.values()):
        return 0, partial
    gold_tables, pred_tables = gold["from"]["table_units"], pred["from"]["table_units"]
    if gold_tables and Counter(map(repr, gold_tables)) != Counter(map(repr, pred_tables)):
        return 0, partial
    return 1, partial


def aggregate_partial(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Official averaging of per-question component scores: acc over questions whose prediction has the
    component, recall over those whose gold has it, F1 from the two (1 when both are 0)."""
    summary = {}
    for name in PARTIAL_TYPES:
        scores = [row[name] for row in rows]
        with_pred = [s["acc"] for s in scores if s["pred_total"] > 0]
        with_gold = [s["rec"] for s in scores if s["label_total"] > 0]
        acc = sum(with_pred) / len(with_pred) if with_pred else 0.0
        rec = sum(with_gold) / len(with_gold) if with_gold else 0.0
        f1 = 1.0 if acc == 0 and rec == 0 else 2 * acc * rec / (acc + rec)
        summary[name] = {"acc": acc, "rec": rec, "f1": f1}
    return summary
