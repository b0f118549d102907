"""Examples for `tuning`: a synthetic shapes dataset and user-written HyperModels."""
