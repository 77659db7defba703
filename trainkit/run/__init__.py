"""A run: its whole config, building it (checked before anything is written), the loop, evaluation, devices, DDP."""
