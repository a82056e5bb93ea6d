"""Shared by every test: no telemetry from MLflow, DVC, GX or BentoML (src/ctcid/offline.py)."""

from ctcid.offline import go_offline

go_offline()
