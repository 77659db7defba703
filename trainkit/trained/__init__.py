"""A trained run from its checkpoint alone: loading it, and what uses it (eval, predict, features, export, report)."""
