"""The segment step: nuclei, CEP8 spots, CD45 rings, the rule, crops and the manifest.

``nuclei`` finds nuclei in DAPI, ``spots`` and ``features`` measure each one, ``analysis`` runs
one field, ``stage`` runs them all and writes the outputs, ``matching`` and ``report`` measure
them against ground truth. Imports the shared core and ``raw`` (to read fields).
"""
