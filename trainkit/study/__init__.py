"""Many runs: the table of run directories (`runs`), their comparison (`compare`), and sweeps on Optuna (`sweep`)."""
