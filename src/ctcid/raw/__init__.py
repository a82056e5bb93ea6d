"""Raw data: the fields a lab images or the simulator draws, under ``data/raw/<sample>/``.

``fields`` reads and writes the raw-data contract, ``ingest`` brings a lab's exports in,
``simulate/`` draws cohorts with ground truth, ``preview`` and ``composite`` make pictures.
Imports the shared core only.
"""
