"""The Great Expectations data gate between segment and split (``ctcid validate``).

``crop_table`` and ``cohort`` derive the tables GX checks, ``expectations`` defines one suite per
table from params, ``gate`` runs the checkpoints and summarises; docs/validation.md has the why.
"""

import os

# GX must never phone home: analytics off before it is first imported (gx/great_expectations.yml
# also sets analytics_enabled: false).
os.environ["GX_ANALYTICS_ENABLED"] = "False"
