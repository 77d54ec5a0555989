"""CLI subcommands, one module each; ``tiltflow.cli.COMMANDS`` lists them."""
