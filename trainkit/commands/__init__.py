"""The `trainkit` subcommands, one module per command or close family; `cli.COMMANDS` is their table."""
