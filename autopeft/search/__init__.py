"""Everything that touches Optuna: storage, budget, the study loop."""
