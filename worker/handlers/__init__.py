"""Model handlers, one module per task. See ``base.Handler`` for the contract."""
