"""Where a run's progress goes: the `log` section, the sink interface, the table of sinks, one module per sink."""
