"""The datasets sqltune reads: Spider, BIRD and CoSQL/SParC directory layouts, WikiSQL's files and one's own
questions as JSON lines, into one `Example` per question (or turn), and where a split keeps its schemas and
SQLite databases.

Shared by the steps: preprocess builds records from the examples (schemas, prompts and hardness are added there),
the train step's GRPO stage finds the training questions' databases, evaluate scores by the dataset's rules.
"""

from __future__ import annotations

from pathlib import Path

from sqltune.datasets.base import Dataset, Example, Layout, Split, read_json
from sqltune.datasets.readers import read_bird, read_jsonl_questions, read_multiturn, read_spider
from sqltune.datasets.wikisql import read_wikisql
from sqltune.errors import SqltuneError

__all__ = ["Dataset", "Example", "Layout", "Split", "read_dataset", "read_json"]


def read_dataset(dataset: str, root: Path, split: str) -> Layout:
    """The layout and examples of one split; errors name the dataset, split or file that is wrong."""
    if dataset not in {d.value for d in Dataset}:
        raise SqltuneError(f"unknown dataset {dataset!r}; expected one of {', '.join(d.value for d in Dataset)}")
    if split not in {s.value for s in Split}:
        raise SqltuneError(f"unknown split {split!r}; expected one of {', '.join(s.value for s in Split)}")
    if dataset == "spider":
        layout = read_spider(root, split)
    elif dataset == "bird":
        layout = read_bird(root, split)
    elif dataset == "jsonl":
        layout = read_jsonl_questions(root, split)
    elif dataset == "wikisql":
        layout = read_wikisql(root, split)
    else:
        layout = read_multiturn(root, split, dataset)
    if not layout.examples:
        raise SqltuneError(f"{dataset} {split} split is empty: {', '.join(map(str, layout.question_files))}")
    return layout
