"""Retraining on new data (docs/retraining.md): ``ctcid retrain`` behind ``make retrain`` and CI.

It pulls data and cached outputs, lets ``dvc repro`` re-run the stages whose inputs changed
(register, promote and package are stages, so the gate decides), and writes a summary of what
the new batch brought, what re-ran, what the gate said and which version now serves.
"""
