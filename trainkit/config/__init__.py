"""Safe YAML, `Name: args` specs, the typed dataclass builder and `--set`, and the loop's own sections.

Nothing here imports a builder: each builder package owns its config section, and `run.config` joins them."""
