"""The Great Expectations data gate between segment and split (``ctcid validate``).

``crop_table`` and ``summaries`` derive the tables GX checks, ``expectations`` defines one suite per
table from params, ``gate`` runs the checkpoints and summarises; docs/validation.md has the why.
"""
