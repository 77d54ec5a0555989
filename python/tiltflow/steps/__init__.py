"""Pipeline steps. Each module exposes ``run(...)``; the CLI commands and the local runner call it."""
