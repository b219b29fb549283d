"""SQL knowledge shared by the steps: database schemas (tables.json), Spider's SQL parser and hardness."""
