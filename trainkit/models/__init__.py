"""The model side: the `model` section, the table of model sources, building, optimizers and schedules, EMA, shapes."""
