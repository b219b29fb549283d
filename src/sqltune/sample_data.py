"""The sample dataset: three small SQLite databases and templated questions, in Spider layout, built by code.

It exists so the demo and the tests need no downloaded data. Every database has the same shape (people,
things, and a link table between them) and every question comes from one of a few templates whose SQL
covers Spider's four hardness levels, so a tiny model fine-tuned for minutes on the train split can
learn the patterns and answer the dev split: dev uses slot values that train does not, and the
slot-less templates are asked on the `library` database in dev only. Output is byte-identical on every run.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqltune.artifacts import artifact_dir

SQL_TYPES = {"INTEGER": "number", "REAL": "number", "TEXT": "text"}


def _list(text: str) -> tuple[str, ...]:
    return tuple(text.split(", "))


@dataclass(frozen=True)
class Domain:
    """One database: `people` (named, with a category and a number), `things`, and `links` between them."""

    db_id: str
    people: str  # table, e.g. "customers"
    person: str  # singular noun
    category: str  # people column with a few values, e.g. "city"
    categories: tuple[str, ...]
    number: str  # numeric people column, e.g. "age"
    names: tuple[str, ...]  # one per person
    things: str  # table, e.g. "products"
    title: str  # things' name column
    titles: tuple[str, ...]  # one per thing
    kind: str  # things column with a few values
    kinds: tuple[str, ...]
    value: str  # numeric things column
    thresholds: tuple[int, ...]
    links: str  # link table, e.g. "orders"
    amount: str  # numeric link column

    @property
    def person_id(self) -> str:
        return f"{self.person}_id"

    @property
    def thing_id(self) -> str:
        return f"{self.things.removesuffix('s')}_id"

    def noun(self, column: str) -> str:
        return column.replace("_", " ")


DOMAINS = (
    Domain(
        db_id="shop",
        people="customers",
        person="customer",
        category="city",
        categories=("Berlin", "Paris", "Rome", "Madrid", "Vienna"),
        number="age",
        names=_list(
            "Alice Brown, Bruno Costa, Chen Wei, Dara Singh, Elena Petrova, Farid Haddad, Grace Kim, "
            "Hugo Martin, Ines Garcia, Jonas Berg, Kofi Mensah, Lena Vogel, Mateo Rossi, Nadia Ali, "
            "Oscar Lind, Priya Rao, Quinn Murphy, Rosa Diaz, Sven Olsen, Tara Walsh"
        ),
        things="products",
        title="product_name",
        titles=_list(
            "Desk Lamp, Garden Hose, Chess Set, Yoga Mat, Coffee Grinder, Rain Jacket, Puzzle Box, "
            "Water Bottle, Tea Kettle, Tennis Racket, Kite, Flower Pot, Bread Knife, Hiking Boots, "
            "Board Game"
        ),
        kind="category",
        kinds=("Home", "Garden", "Toys", "Sports", "Kitchen"),
        value="price",
        thresholds=(20, 35, 50, 65, 80),
        links="orders",
        amount="quantity",
    ),
    Domain(
        db_id="school",
        people="students",
        person="student",
        category="house",
        categories=("Red", "Blue", "Green", "Yellow", "Purple"),
        number="age",
        names=_list(
            "Amy Clarke, Ben Turner, Cora Hughes, Dev Patel, Ella Moore, Finn Walker, Gina Lopez, "
            "Hana Sato, Ivan Novak, Jade Wilson, Kai Becker, Lily Evans, Max Fischer, Nora Young, "
            "Omar Aziz, Pia Keller, Ravi Nair, Sara Holm, Tom Baker, Uma Reddy"
        ),
        things="courses",
        title="title",
        titles=_list(
            "Algebra, Biology, Chemistry, Drawing, Economics, French, Geography, History, Informatics, "
            "Journalism, Latin, Music, Physics, Statistics, Theatre"
        ),
        kind="department",
        kinds=("Science", "Arts", "Languages", "Humanities", "Mathematics"),
        value="hours",
        thresholds=(10, 20, 30, 40, 50),
        links="enrollments",
        amount="score",
    ),
    Domain(
        db_id="library",
        people="members",
        person="member",
        category="country",
        categories=("Canada", "Chile", "Japan", "Kenya", "Norway"),
        number="birth_year",
        names=_list(
            "Anna Reid, Boris Ivanov, Carla Mendes, David Okoro, Emma Laine, Felix Braun, Hiro Tanaka, "
            "Isla Grant, Jamal Idris, Karin Dahl, Luis Ortega, Mia Jensen, Nils Ek, Olga Sokol, Pablo Ruiz, "
            "Rina Mori, Sam Cole, Tina Lund, Victor Hale, Wanda Nowak"
        ),
        things="books",
        title="title",
        titles=_list(
            "Silent River, Iron Garden, Paper Moon, Glass City, Winter Road, Blue Harbor, Lost Atlas, "
            "Quiet Storm, Red Orchard, Stone Bridge, Golden Hour, Night Train, Open Sky, Salt Lake, "
            "Wild Coast"
        ),
        kind="genre",
        kinds=("Mystery", "Fantasy", "History", "Poetry", "Science"),
        value="pages",
        thresholds=(150, 250, 350, 450, 550),
        links="loans",
        amount="days",
    ),
)

# How often each person appears in the link table: distinct counts at the top (no ties for "the most"),
# and the last few people never appear (for "have no ..." questions).
_LINKS_PER_PERSON = (9, 7, 6, 5, 5, 4, 4, 3, 3, 3, 2, 2, 2, 1, 1, 1)


def _tables(d: Domain) -> list[tuple[str, list[tuple[str, str]], str, list[tuple[str, str, str]]]]:
    """(table, [(column, SQL type)], primary key, [(column, referenced table, referenced column)])."""
    return [
        (d.people, [(d.person_id, "INTEGER"), ("name", "TEXT"), (d.category, "TEXT"), (d.number, "INTEGER")],
         d.person_id, []),
        (d.things, [(d.thing_id, "INTEGER"), (d.title, "TEXT"), (d.kind, "TEXT"), (d.value, "INTEGER")],
         d.thing_id, []),
        (d.links, [(f"{d.links.removesuffix('s')}_id", "INTEGER"), (d.person_id, "INTEGER"), (d.thing_id, "INTEGER"),
                   (d.amount, "INTEGER")],
         f"{d.links.removesuffix('s')}_id", [(d.person_id, d.people, d.person_id), (d.thing_id, d.things, d.thing_id)]),
    ]  # fmt: skip


def _rows(d: Domain) -> dict[str, list[tuple[Any, ...]]]:
    """Deterministic rows: arithmetic, not random, so every run and every Python gives the same bytes."""
    base = {"age": 18, "birth_year": 1950}[d.number]
    people = [(i + 1, name, d.categories[i % len(d.categories)], base + (i * 7) % 40) for i, name in enumerate(d.names)]
    step = max(d.thresholds[1] - d.thresholds[0], 1)
    things = [
        (i + 1, title, d.kinds[i % len(d.kinds)], d.thresholds[0] - step // 2 + (i * 4) % 15 * step // 3)
        for i, title in enumerate(d.titles)
    ]
    links = []
    for person, count in enumerate(_LINKS_PER_PERSON, start=1):
        for k in range(count):
            thing = (person * 5 + k * 3) % len(d.titles) + 1
            links.append((len(links) + 1, person, thing, 1 + (person * 3 + k * 7) % 20))
    return {d.people: people, d.things: things, d.links: links}


def build_database(d: Domain, path: Path) -> None:
    connection = sqlite3.connect(path)
    try:
        for table, columns, key, foreign in _tables(d):
            parts = [f"{name} {kind}" for name, kind in columns] + [f"PRIMARY KEY ({key})"]
            parts += [f"FOREIGN KEY ({c}) REFERENCES {t}({r})" for c, t, r in foreign]
            connection.execute(f"CREATE TABLE {table} ({', '.join(parts)})")
            rows = _rows(d)[table]
            connection.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))})", rows)
        connection.commit()
    finally:
        connection.close()


def tables_entry(d: Domain) -> dict[str, Any]:
    """The database's tables.json entry, as Spider writes them."""
    tables = _tables(d)
    columns: list[list[Any]] = [[-1, "*"]]
    types = ["text"]
    for index, (_, cols, _, _) in enumerate(tables):
        columns += [[index, name] for name, _ in cols]
        types += [SQL_TYPES[kind] for _, kind in cols]
    position = {(tables[t][0], name): i for i, (t, name) in enumerate(columns) if t >= 0}
    return {
        "db_id": d.db_id,
        "table_names_original": [t[0] for t in tables],
        "table_names": [d.noun(t[0]) for t in tables],
        "column_names_original": columns,
        "column_names": [[t, d.noun(name) if t >= 0 else name] for t, name in columns],
        "column_types": types,
        "primary_keys": [position[(table, key)] for table, _, key, _ in tables],
        "foreign_keys": [[position[(table, c)], position[(t, r)]] for table, _, _, fks in tables for c, t, r in fks],
    }


def questions(d: Domain) -> Iterator[tuple[str, str, str]]:
    """(split, question, SQL) for every template and slot value of one database."""
    n = d.noun
    person_join = f"FROM {d.links} AS T1 JOIN {d.people} AS T2 ON T1.{d.person_id} = T2.{d.person_id}"
    slotted = [
        (d.categories, f"List the names of {d.people} whose {n(d.category)} is {{v}}.",
         f"SELECT name FROM {d.people} WHERE {d.category} = '{{v}}'"),
        (d.kinds, f"List the {n(d.title)}s of {d.things} whose {n(d.kind)} is {{v}}.",
         f"SELECT {d.title} FROM {d.things} WHERE {d.kind} = '{{v}}'"),
        (d.thresholds, f"How many {d.things} have {n(d.value)} greater than {{v}}?",
         f"SELECT count(*) FROM {d.things} WHERE {d.value} > {{v}}"),
        (d.kinds, f"What is the average {n(d.value)} of {d.things} whose {n(d.kind)} is {{v}}?",
         f"SELECT avg({d.value}) FROM {d.things} WHERE {d.kind} = '{{v}}'"),
        (d.categories, f"List the name and {n(d.number)} of {d.people} whose {n(d.category)} is {{v}}.",
         f"SELECT name, {d.number} FROM {d.people} WHERE {d.category} = '{{v}}'"),
        (d.names[:12], f"How many {d.links} does the {d.person} named {{v}} have?",
         f"SELECT count(*) {person_join} WHERE T2.name = '{{v}}'"),
        (d.names[:12], f"List the {n(d.title)}s of {d.things} in the {d.links} of the {d.person} named {{v}}.",
         f"SELECT T2.{d.title} FROM {d.links} AS T1 JOIN {d.things} AS T2 ON T1.{d.thing_id} = T2.{d.thing_id} "
         f"JOIN {d.people} AS T3 ON T1.{d.person_id} = T3.{d.person_id} WHERE T3.name = '{{v}}'"),
        (d.categories,
         f"List the names of the 2 {d.people} with the highest {n(d.number)} whose {n(d.category)} is {{v}}.",
         f"SELECT name FROM {d.people} WHERE {d.category} = '{{v}}' ORDER BY {d.number} DESC LIMIT 2"),
        (d.categories, f"Which {d.person} whose {n(d.category)} is {{v}} has the most {d.links}?",
         f"SELECT T2.name {person_join} WHERE T2.{d.category} = '{{v}}' GROUP BY T1.{d.person_id} "
         "ORDER BY count(*) DESC LIMIT 1"),
        (d.categories, f"List the names of {d.people} whose {n(d.category)} is {{v}} and whose {n(d.number)} is "
         "above the average.",
         f"SELECT name FROM {d.people} WHERE {d.category} = '{{v}}' AND {d.number} > "
         f"(SELECT avg({d.number}) FROM {d.people})"),
    ]  # fmt: skip
    for values, question, sql in slotted:
        for i, value in enumerate(values):
            yield ("dev" if i % 4 == 2 else "train"), question.format(v=value), sql.format(v=value)
    slotless = [
        (f"How many {d.people} are there?", f"SELECT count(*) FROM {d.people}"),
        (f"How many {d.people} are there for each {n(d.category)}?",
         f"SELECT {d.category}, count(*) FROM {d.people} GROUP BY {d.category}"),
        (f"What are the minimum and maximum {n(d.value)} of all {d.things}?",
         f"SELECT min({d.value}), max({d.value}) FROM {d.things}"),
        (f"List the names of {d.people} who have no {d.links}.",
         f"SELECT name FROM {d.people} WHERE {d.person_id} NOT IN (SELECT {d.person_id} FROM {d.links})"),
        (f"List the {n(d.title)}s of {d.things} whose {n(d.value)} is above the average.",
         f"SELECT {d.title} FROM {d.things} WHERE {d.value} > (SELECT avg({d.value}) FROM {d.things})"),
        (f"Which {d.person} has the most {d.links}?",
         f"SELECT T2.name {person_join} GROUP BY T1.{d.person_id} ORDER BY count(*) DESC LIMIT 1"),
    ]  # fmt: skip
    split = "dev" if d.db_id == "library" else "train"
    for question, sql in slotless:
        yield split, question, sql


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def write_sample_dataset(out: str | os.PathLike[str], *, overwrite: bool = False) -> dict[str, int]:
    """Write the sample dataset to `out` as an artifact (built beside it, then renamed); returns split sizes.

    Layout: `tables.json`, `train_spider.json`, `dev.json`, `train_gold.sql`, `dev_gold.sql`,
    `database/<db_id>/<db_id>.sqlite`, and the manifest that lets a rerun replace it.
    """
    splits: dict[str, list[dict[str, str]]] = {"train": [], "dev": []}
    with artifact_dir(out, "sample-dataset", overwrite=overwrite) as tmp:
        for d in DOMAINS:
            (tmp / "database" / d.db_id).mkdir(parents=True)
            build_database(d, tmp / "database" / d.db_id / f"{d.db_id}.sqlite")
            for split, question, sql in questions(d):
                splits[split].append({"db_id": d.db_id, "question": question, "query": sql})
        (tmp / "tables.json").write_text(_dump([tables_entry(d) for d in DOMAINS]), encoding="utf-8")
        for split, name in (("train", "train_spider"), ("dev", "dev")):
            (tmp / f"{name}.json").write_text(_dump(splits[split]), encoding="utf-8")
            gold = "".join(f"{e['query']}\t{e['db_id']}\n" for e in splits[split])
            (tmp / f"{split}_gold.sql").write_text(gold, encoding="utf-8")
    return {split: len(entries) for split, entries in splits.items()}
