"""SQL knowledge and machinery shared by the steps (no step package imports another; they meet here):

- `schema` (tables.json), `parser` and `hardness` (the official Spider semantics), `depth` (how deeply untrusted
  SQL may nest before it is parsed);
- `limits` (what one untrusted query may use and how it fails), `sqlite` (opening a user's database without writing
  beside it), `execution` (the sandbox and the official EX comparison), `pool` (untrusted SQL in crash-safe worker
  processes);
- other engines: `location` (where a question's database is: SQLite files or a URL with {db_id}), `guard` (one
  SELECT, allow-listed functions), `server` (the PostgreSQL and DuckDB sandboxes), `live` (a schema read from a
  live database), `transpile` (SQLite gold for another dialect), `copy` (`copy-db`), `embedded` (`pg-server`);
- `extract` (one SQL statement out of a model's free-form output).
"""
