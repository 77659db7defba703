"""The data side: the `data` section, the table of dataset types, datasets, transforms, samplers, loaders and caches."""
