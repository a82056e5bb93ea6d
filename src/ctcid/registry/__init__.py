"""Room for the register and promote steps (next issue): MLflow model registry, gated promotion,
model card. May import the shared core, ``evaluation`` and ``model``; uses :mod:`ctcid.tracking`.
"""
