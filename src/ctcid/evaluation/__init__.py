"""The evaluate step: every trained backbone and the baselines on the held-out test set, per cell
and per patient. Imports the shared core, ``split`` and ``model`` (to score crops).
"""
