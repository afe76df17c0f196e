"""Differential fuzzing of ``run_sql``: generated statements through the product path vs a scratch database."""
