"""Metadata database: schema, engine, migrations."""
