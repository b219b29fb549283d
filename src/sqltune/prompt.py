"""The one prompt function that training and prediction both call, and how its tokens are counted.

DB-GPT-Hub trains and predicts with different prompts; here both steps rebuild the model input from the
record's fields with `build_prompt`, so they cannot drift apart. When a prompt is over its token budget
the schema is trimmed (whole lines from the end: foreign keys first, then the last tables), never the
question, the evidence or the history, and the result says how much was trimmed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    """A built prompt: `text` is the exact model input; `schema_lines_dropped` > 0 means it was trimmed."""

    text: str
    schema_lines_dropped: int = 0
    fits: bool = True


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
    lines = record.get("schema", "").split("\n")
    schema = "\n".join(lines[: len(lines) - schema_lines_dropped])
    context = _context(schema, record.get("evidence"), record.get("history") or ())
    return chat_messages(context, record["question"], record.get("dialect"))


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
    """Build the model input for a record (`question`, `schema`, optional `evidence`, `history`, `dialect`).

    With `max_tokens` and `count_tokens`, trailing schema lines are dropped until the prompt fits
    (binary search over how many lines to keep). If even an empty schema does not fit, the prompt
    is returned with `fits=False`: the caller decides, because the question is never cut.
    `chat_render` turns chat messages into text (e.g. a tokenizer's chat template); without it the
    chat template yields the user message alone.
    """
    lines = record.get("schema", "").split("\n")

    def text_for(keep: int) -> str:
        return render(record, "\n".join(lines[:keep]), template, chat_render)

    full = text_for(len(lines))
    if max_tokens is None or count_tokens is None or count_tokens(full) <= max_tokens:
        return Prompt(full)
    low, high = 0, len(lines) - 1  # the largest `keep` in [low, high] that fits; `low` may not fit
    while low < high:
        mid = (low + high + 1) // 2
        if count_tokens(text_for(mid)) <= max_tokens:
            low = mid
        else:
            high = mid - 1
    text = text_for(low)
    return Prompt(text, schema_lines_dropped=len(lines) - low, fits=count_tokens(text) <= max_tokens)


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
