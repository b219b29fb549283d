"""Which tables and columns of a database a question is about: a ranking that needs no model.

The signals are the ones RESDSQL's and CodeS's rankers learn from, computed directly: the question's words against
each table's and column's names (the original names split at `_` and camelCase, and tables.json's natural names,
which expand abbreviations: `dept_name` is "department name"), each word weighted by how rare it is among the
database's names (IDF: `id` or `name` says little), and the cell values the question mentions (`values.ValueIndex`:
"France" is in `singer.Country`). Words are compared lower-cased and singular ("singers" is `singer`).

A table's score is its own name's match, plus its best column's, plus a bonus when the question mentions one of
its values. The filter keeps the tables that score at least `MIN_SCORE`, at least `MIN_TABLES` and at most
`MAX_TABLES` of them (the best first), then the tables on the shortest foreign-key path between any two kept ones
(so what is kept stays joinable: `singer_in_concert` between `singer` and `concert`). Of a kept table with more
than `MAX_COLUMNS` columns it keeps the best-scoring columns and every key column. The constants were chosen on
held-out Spider training questions (benchmarks/schema_filter_tuning.py), never on the dev questions the accuracy
figures report.

`must_keep` (the gold query's tables and columns, for training records) is kept first, whatever the scores: a model
trained on schemas that always hold what the answer needs learns to trust the schema it is shown (RESDSQL trains
its generator the same way), and the ranking decides the rest.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

from sqltune.sql.schema import DatabaseSchema
from sqltune.sql.usage import Usage

# Chosen on 1,000 held-out Spider training questions (benchmarks/results/schema-filter-tuning.md).
MIN_SCORE = 0.35
MIN_TABLES = 2
MAX_TABLES = 6
MAX_COLUMNS = 16
COLUMN_WEIGHT = 1.0
VALUE_BONUS = 0.4
MAX_BRIDGE = 2  # intermediate tables on a kept join path

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[a-z0-9]+")
# English function words: neither a schema name nor a value on their own (the value index skips them too).
_FUNCTION_WORDS = (
    "a an the of in on at to for from by with and or not no is are was were be been it its this that "
    "these those what which who whom whose how many much all any each every there their them they he she "
    "his her we you i me my our your do does did have has had than then as into over under more most less "
    "least same"
)
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())
# ...and the words of a request ("show", "count", "number"), which point at no table or column.
_REQUEST_WORDS = "being show list find give return tell get also please number count total"
_STOP = FUNCTION_WORDS | set(_REQUEST_WORDS.split())


# Irregular verb forms questions use where the schema has the plain verb (`teaches`, `takes`, `buys`).
_IRREGULAR = {
    "taught": "teach", "took": "take", "taken": "take", "bought": "buy", "won": "win", "wrote": "write",
    "written": "write", "made": "make", "sold": "sell", "paid": "pay", "held": "hold", "led": "lead", "ran": "run",
    "sang": "sing", "sung": "sing", "gave": "give", "given": "give", "went": "go", "flew": "fly", "flown": "fly",
    "drove": "drive", "driven": "drive", "built": "build", "spent": "spend", "sent": "send", "kept": "keep",
    "met": "meet", "began": "begin", "begun": "begin", "chose": "choose", "chosen": "choose", "born": "birth",
}  # fmt: skip


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light stem: cities -> city, classes -> class, matches -> match, singers -> singer, located -> locat,
    nursing -> nurs, taught -> teach; words of up to 3 letters are kept."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    for ending in ("ing", "ed"):
        if word.endswith(ending) and len(word) - len(ending) >= 4:
            return word[: -len(ending)]
    return word


def name_words(name: str) -> tuple[str, ...]:
    """The stemmed words of a schema name: `StuID` -> (stu, id), `dept_name` -> (dept, name)."""
    return tuple(stem(word) for word in _WORD.findall(_CAMEL.sub(" ", name).lower()))


def question_words(question: str) -> tuple[str, ...]:
    """The stemmed words of a question, in order (stop words included: phrases are matched in order)."""
    return tuple(stem(word) for word in _WORD.findall(question.lower()))


@dataclass
class Ranking:
    """What the filter keeps of one database for one question, and why."""

    tables: list[int]  # kept tables, most relevant first
    columns: dict[int, list[int]]  # kept table -> its kept columns, in declaration order
    table_scores: dict[int, float] = field(default_factory=dict)
    column_scores: dict[int, float] = field(default_factory=dict)
    values: dict[int, list[str]] = field(default_factory=dict)  # kept column -> the values the question mentions
    fillers: set[int] = field(default_factory=set)  # tables kept only to reach MIN_TABLES (no evidence for them)


@dataclass(frozen=True)
class _Names:
    """A database's names as word sets, and each word's weight (IDF over the database's tables and columns)."""

    tables: tuple[frozenset[str], ...]
    table_phrases: tuple[tuple[tuple[str, ...], ...], ...]
    columns: tuple[frozenset[str], ...]
    column_phrases: tuple[tuple[tuple[str, ...], ...], ...]
    weight: dict[str, float]
    tables_with: dict[str, int]  # word -> how many tables have it in their own or their columns' names


@lru_cache(maxsize=512)
def _names(schema: DatabaseSchema) -> _Names:
    def words(*names: str) -> tuple[frozenset[str], tuple[tuple[str, ...], ...]]:
        phrases = tuple(dict.fromkeys(p for p in (tuple(w for w in name_words(n) if w) for n in names) if p))
        return frozenset(w for p in phrases for w in p if w not in _STOP), phrases

    tables = [words(name, natural) for name, natural in zip(schema.tables, schema.natural_tables, strict=True)]
    columns = [words(c.name, c.natural_name) if c.table >= 0 else (frozenset(), ()) for c in schema.columns]
    documents = [w for w, _ in tables] + [w for w, _ in columns[1:]]
    frequency: dict[str, int] = {}
    for document in documents:
        for word in document:
            frequency[word] = frequency.get(word, 0) + 1
    weight = {word: math.log(1 + len(documents) / count) for word, count in frequency.items()}
    tables_with: dict[str, int] = {}
    for t, (own, _) in enumerate(tables):
        for word in own.union(*(columns[i][0] for i in schema.table_columns(t))):
            tables_with[word] = tables_with.get(word, 0) + 1
    return _Names(
        tuple(w for w, _ in tables), tuple(p for _, p in tables),
        tuple(w for w, _ in columns), tuple(p for _, p in columns), weight, tables_with,
    )  # fmt: skip


def _alike(a: str, b: str) -> bool:
    short, long = sorted((a, b), key=len)
    return (len(short) >= 4 and long.startswith(short)) or (len(short) >= 7 and short[:7] == long[:7])


class _Asked:
    """A question's words as the names are compared with them."""

    def __init__(self, question: str) -> None:
        words = question_words(question)
        self.words = set(words) - _STOP
        self.text = f" {' '.join(words)} "
        self._says: dict[str, bool] = {}

    def says(self, word: str) -> bool:
        """The question has `word`, or a word that starts with it or it starts with (4+ letters: rent, rental),
        or one that shares its first 7 letters."""
        if word not in self._says:
            self._says[word] = word in self.words or any(_alike(word, asked) for asked in self.words)
        return self._says[word]

    def match(self, words: frozenset[str], phrases: tuple[tuple[str, ...], ...], names: _Names) -> float:
        """How much of a name the question says: 1.0 for the whole name as a phrase, else the weighted share of
        its words the question has."""
        if not words:
            return 0.0
        if any(len(p) > 1 and f" {' '.join(p)} " in self.text for p in phrases):
            return 1.0
        ordered = sorted(words)  # a set's order follows the hash seed; a float sum's last bit, its order
        total = sum(names.weight.get(w, 1.0) for w in ordered)
        return sum(names.weight.get(w, 1.0) for w in ordered if self.says(w)) / total

    def specificity(self, words: frozenset[str], names: _Names) -> float:
        """How much a name's said words point at one table: 1 / the number of tables that have the most telling
        of them (a question's "name" points at every table with a name column)."""
        said = [w for w in words if self.says(w)]
        return max((1 / names.tables_with.get(w, 1) for w in said), default=0.0)


def _fk_graph(schema: DatabaseSchema) -> dict[int, set[int]]:
    graph: dict[int, set[int]] = {t: set() for t in range(len(schema.tables))}
    for source, target in schema.foreign_keys:
        a, b = schema.columns[source].table, schema.columns[target].table
        if a != b:
            graph[a].add(b)
            graph[b].add(a)
    return graph


def _path(graph: dict[int, set[int]], start: int, goal: int, limit: int) -> list[int] | None:
    """The tables strictly between `start` and `goal` on a shortest foreign-key path (None: none within `limit`)."""
    previous: dict[int, int | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = []
            while (node := previous[node]) is not None and node != start:  # type: ignore[assignment]
                path.append(node)
            return path[::-1] if len(path) <= limit else None
        for other in sorted(graph[node]):
            if other not in previous:
                previous[other] = node
                queue.append(other)
    return None


def _key_columns(schema: DatabaseSchema, table: int, kept: set[int]) -> set[int]:
    """The table's primary key columns and its foreign key columns to or from kept tables."""
    keys = {i for key in schema.primary_keys for i in key if schema.columns[i].table == table}
    for source, target in schema.foreign_keys:
        a, b = schema.columns[source].table, schema.columns[target].table
        if a == table and b in kept:
            keys.add(source)
        if b == table and a in kept:
            keys.add(target)
    return keys


def rank_schema(
    schema: DatabaseSchema,
    question: str,
    matched_values: dict[int, list[str]] | None = None,
    must_keep: Usage | None = None,
    *,
    keep_all: bool = False,
) -> Ranking:
    """Rank `schema`'s tables and columns for `question` and choose what to keep (see the module docstring).

    `matched_values` are the question's values by column (`ValueIndex.matches`); `must_keep` is kept first. With
    `keep_all`, every table and column is kept, in the order of relevance (values without a filter).
    """
    names = _names(schema)
    matched_values = matched_values or {}
    asked = _Asked(question)
    column_scores = {
        i: asked.match(names.columns[i], names.column_phrases[i], names)
        + (VALUE_BONUS if matched_values.get(i) else 0.0)
        for i in range(1, len(schema.columns))
    }
    table_scores = {}
    referencing = {source for source, _ in schema.foreign_keys}  # `concert.stadium_id` says "stadium", not "concert"
    for t in range(len(schema.tables)):
        own = asked.match(names.tables[t], names.table_phrases[t], names)
        columns = schema.table_columns(t)
        best = max(
            (
                min(column_scores[i], 1.0) * asked.specificity(names.columns[i], names)
                for i in columns
                if i not in referencing
            ),
            default=0.0,
        )
        valued = any(matched_values.get(i) for i in columns)
        table_scores[t] = own + COLUMN_WEIGHT * best + (VALUE_BONUS if valued else 0.0)
    forced = set(must_keep.tables) if must_keep else set()
    order = sorted(range(len(schema.tables)), key=lambda t: (t not in forced, -table_scores[t], t))
    if keep_all:
        columns = {t: schema.table_columns(t) for t in order}
        fillers = {t for t in order if t not in forced and table_scores[t] < MIN_SCORE}
        return Ranking(order, columns, table_scores, column_scores, dict(matched_values), fillers)
    kept = [t for t in order if t in forced or table_scores[t] >= MIN_SCORE]
    kept = kept[: max(MAX_TABLES, len(forced))]
    graph = _fk_graph(schema)
    fillers = set()
    while len(kept) < min(MIN_TABLES, len(schema.tables)):  # the best of the rest, neighbours of the kept first
        rest = [u for u in order if u not in kept]
        near = [u for u in rest if graph[u] & set(kept)]
        kept.append((near or rest)[0])
        fillers.add(kept[-1])
    for a, b in [(a, b) for i, a in enumerate(list(kept)) for b in list(kept)[i + 1 :]]:
        between = _path(graph, a, b, MAX_BRIDGE)
        for bridge in between or ():
            if bridge not in kept:  # as relevant as the tables it joins: dropped just before the lesser of them
                table_scores[bridge] = max(table_scores[bridge], min(table_scores[a], table_scores[b]) - 0.01)
                kept.append(bridge)
    kept_set = set(kept)
    forced_columns = set(must_keep.columns) if must_keep else set()
    columns = {}
    for t in kept:
        own = schema.table_columns(t)
        if len(own) > MAX_COLUMNS:
            keys = _key_columns(schema, t, kept_set) | (forced_columns & set(own))
            best = sorted((i for i in own if i not in keys), key=lambda i: (-column_scores[i], i))
            chosen = keys | set(best[: max(0, MAX_COLUMNS - len(keys))])
            own = [i for i in own if i in chosen]
        columns[t] = own
    kept.sort(key=lambda t: (t not in forced, -table_scores[t], t))
    shown = {i for own in columns.values() for i in own}
    values = {i: v for i, v in matched_values.items() if i in shown}
    return Ranking(kept, columns, table_scores, column_scores, values, fillers)
