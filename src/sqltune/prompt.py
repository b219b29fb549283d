"""The one prompt function that training and prediction both call, and how its tokens are counted.

DB-GPT-Hub trains and predicts with different prompts; here both steps rebuild the model input from the
record's fields with `build_prompt`, so they cannot drift apart. When a prompt is over its token budget
the schema is trimmed, never the question, the evidence or the history, and the result says how much was
trimmed: a record with `schema_units` (written by preprocess's `schema_filter` and `schema_values`) loses whole
units in its decided drop order (sample values, then tables nothing in the question points at, values, column
comments, then the least relevant tables), one without them whole lines from the end (foreign keys first, then the
last tables).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqltune.errors import SqltuneError


class PromptTemplate(str, Enum):
    """The prompt templates (also the CLI choice type of every step that builds prompts)."""

    alpaca = "alpaca"  # an Alpaca-style instruction prompt, like DB-GPT-Hub's
    chat = "chat"  # system + user messages rendered by the model's own chat template


TEMPLATES = tuple(t.value for t in PromptTemplate)

# How the prompt names a record's SQL dialect (sqlglot's name, in the record's `dialect`; absent: SQLite).
DIALECT_NAMES = {
    "sqlite": "SQLite", "postgres": "PostgreSQL", "duckdb": "DuckDB", "mysql": "MySQL", "snowflake": "Snowflake",
    "bigquery": "BigQuery", "tsql": "SQL Server", "oracle": "Oracle", "trino": "Trino", "presto": "Presto",
    "redshift": "Redshift", "spark": "Spark SQL", "databricks": "Databricks SQL", "clickhouse": "ClickHouse",
}  # fmt: skip


def system_message(dialect: str | None = None) -> str:
    """The instruction naming the SQL dialect the answer must be in."""
    name = DIALECT_NAMES.get(dialect or "sqlite", dialect or "SQLite")
    return (
        f"You are an expert {name} developer. Given a database schema and a question, answer with one "
        f"{name} query that answers the question, and nothing else."
    )


SYSTEM_MESSAGE = system_message()

_ALPACA = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{question}\n\n### Response:\n"
)

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Prompt:
    """A built prompt: `text` is the exact model input; `schema_lines_dropped` > 0 means it was trimmed: the lines
    dropped from the end of the schema, or for a record with `schema_units` the steps of its drop order taken
    (`left_out` then names every unit that was left out, e.g. `table singer`, `values singer`)."""

    text: str
    schema_lines_dropped: int = 0
    fits: bool = True
    left_out: tuple[str, ...] = ()


def _context(schema: str, evidence: str | None, history: Sequence[str]) -> str:
    parts = [f"Database schema:\n{schema}" if schema else "Database schema: (trimmed)"]
    if evidence:
        parts.append(f"Hint: {evidence}")
    if history:
        parts.append("Earlier questions in this conversation:\n" + "\n".join(f"- {q}" for q in history))
    return "\n\n".join(parts)


def render(
    record: Mapping[str, Any],
    schema: str,
    template: str = "alpaca",
    chat_render: Callable[[Messages], str] | None = None,
) -> str:
    """The model input for `record` with the given (possibly trimmed) schema text."""
    question = record["question"]
    context = _context(schema, record.get("evidence"), record.get("history") or ())
    if template == "alpaca":
        instruction = f"{system_message(record.get('dialect'))}\n\n{context}"
        return _ALPACA.format(instruction=instruction, question=question)
    if template == "chat":
        messages = chat_messages(context, question, record.get("dialect"))
        return chat_render(messages) if chat_render else messages[-1]["content"]
    raise ValueError(f"unknown prompt template {template!r}; expected one of {', '.join(TEMPLATES)}")


def prompt_messages(record: Mapping[str, Any], schema_lines_dropped: int = 0) -> Messages:
    """The chat messages of `record`'s prompt with its schema trimmed as `build_prompt` trimmed it: what a
    library that applies the chat template itself (TRL) takes to build exactly `build_prompt`'s text."""
    schema = _Schema(record).text(schema_lines_dropped)
    context = _context(schema, record.get("evidence"), record.get("history") or ())
    return chat_messages(context, record["question"], record.get("dialect"))


def hidden_units(units: Sequence[Mapping[str, Any]], steps: int) -> set[int]:
    """The schema units left out after the first `steps` of the drop order: those dropped, and those that need
    (`needs`) a unit left out (a table's values go with the table)."""
    hidden = {u for u, unit in enumerate(units) if unit["drop"] < steps}
    grew = True
    while grew:
        grew = False
        for u, unit in enumerate(units):
            if u not in hidden and any(n in hidden for n in unit.get("needs", ())):
                hidden.add(u)
                grew = True
    return hidden


class _Schema:
    """A record's schema, trimmed by a number of steps: lines from the end, or units in their drop order."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.units = record.get("schema_units")
        if self.units:
            _check_units(record, self.units)
            self.steps = len(self.units)
        else:
            self.lines = record.get("schema", "").split("\n")
            self.steps = len(self.lines)

    def text(self, steps: int) -> str:
        if not self.units:
            return "\n".join(self.lines[: len(self.lines) - steps])
        hidden = hidden_units(self.units, steps)
        return "\n".join(unit["text"] for u, unit in enumerate(self.units) if u not in hidden)

    def left_out(self, steps: int) -> tuple[str, ...]:
        if not self.units or not steps:
            return ()
        hidden = sorted(hidden_units(self.units, steps), key=lambda u: self.units[u]["drop"])
        return tuple(" ".join(filter(None, (self.units[u]["kind"], self.units[u].get("table")))) for u in hidden)


def left_out_kinds(labels: Iterable[str]) -> Counter[str]:
    """How many units of each kind (`table`, `values`, ...) the `Prompt.left_out` labels name."""
    return Counter(label.split(" ", 1)[0] for label in labels)


def _check_units(record: Mapping[str, Any], units: Any) -> None:
    """`schema_units` as preprocess writes them: texts, and drop ranks that order them all."""
    where = f"record {record.get('id', '?')}: schema_units"
    if not isinstance(units, list) or not all(isinstance(u, Mapping) for u in units):
        raise SqltuneError(f"{where} must be a list of units (objects with text and drop)")
    if any(not isinstance(u.get("text"), str) for u in units):
        raise SqltuneError(f"{where}: every unit needs a text")
    if sorted(u.get("drop", -1) for u in units) != list(range(len(units))):
        raise SqltuneError(f"{where}: the drop ranks must be 0..{len(units) - 1}, each once")
    if any(not 0 <= n < len(units) for u in units for n in u.get("needs", ())):
        raise SqltuneError(f"{where}: needs names a unit that does not exist")


def chat_messages(context: str, question: str, dialect: str | None = None) -> Messages:
    return [
        {"role": "system", "content": system_message(dialect)},
        {"role": "user", "content": f"{context}\n\nQuestion: {question}"},
    ]


def build_prompt(
    record: Mapping[str, Any],
    template: str = "alpaca",
    *,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    chat_render: Callable[[Messages], str] | None = None,
) -> Prompt:
    """Build the model input for a record (`question`, `schema` or `schema_units`, optional `evidence`, `history`,
    `dialect`).

    With `max_tokens` and `count_tokens`, the schema is trimmed until the prompt fits: whole units in the record's
    drop order when it has `schema_units`, else trailing lines (binary search over how many to drop). If even an
    empty schema does not fit, the prompt is returned with `fits=False`: the caller decides, because the question
    is never cut. `chat_render` turns chat messages into text (e.g. a tokenizer's chat template); without it the
    chat template yields the user message alone.
    """
    schema = _Schema(record)

    def text_for(steps: int) -> str:
        return render(record, schema.text(steps), template, chat_render)

    full = text_for(0)
    if max_tokens is None or count_tokens is None or count_tokens(full) <= max_tokens:
        return Prompt(full)
    low, high = 1, schema.steps  # the fewest steps in [low, high] that fit; `high` may not fit
    while low < high:
        mid = (low + high) // 2
        if count_tokens(text_for(mid)) <= max_tokens:
            high = mid
        else:
            low = mid + 1
    text = text_for(high)
    return Prompt(
        text, schema_lines_dropped=high, fits=count_tokens(text) <= max_tokens, left_out=schema.left_out(high)
    )


def encode_prompt(tokenizer: Any, text: str, template: str) -> list[int]:
    """Token ids of a prompt. A chat-rendered prompt already carries its special tokens; alpaca gets BOS."""
    return tokenizer(text, add_special_tokens=template != "chat")["input_ids"]


def prompt_functions(tokenizer: Any, template: str) -> tuple[Callable[[str], int], Callable[[Messages], str] | None]:
    """`count_tokens` and `chat_render` for `build_prompt` with this tokenizer."""
    if template not in TEMPLATES:
        raise SqltuneError(f"unknown prompt template {template!r}; expected one of {', '.join(TEMPLATES)}")

    def count_tokens(text: str) -> int:
        return len(encode_prompt(tokenizer, text, template))

    if template != "chat":
        return count_tokens, None
    if not getattr(tokenizer, "chat_template", None):
        raise SqltuneError(
            "prompt template 'chat' needs a tokenizer with a chat template; set prompt_template to alpaca"
        )

    def chat_render(messages: Messages) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return count_tokens, chat_render
