"""SQL knowledge and machinery shared by the steps (no step package imports another; they meet here):

- `schema` (tables.json), `parser` and `hardness` (the official Spider semantics), `depth` (how deeply untrusted
  SQL may nest before it is parsed);
- `sqlite` (opening a user's database without writing beside it), `execution` (the sandbox and the official EX
  comparison), `pool` (untrusted SQL in crash-safe worker processes);
- `extract` (one SQL statement out of a model's free-form output).
"""
