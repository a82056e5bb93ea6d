"""The register and promote steps: the MLflow model registry, the promotion gate, rollback and the
model card (docs/registry.md).

``register`` logs the selected backbone as a pyfunc (``pyfunc``, ``served_model``) with its tags
(``metadata``), card and gallery, and aliases it challenger; ``promote`` scores challenger and
champion on today's test set (with ``behaviour``'s checks on probe crops) and moves the champion
alias, or rolls it back; ``store`` is the registry as this step writes it (versions, aliases,
decisions); ``views`` is what the commands print. Imports the shared core, ``raw`` (false colour),
``split``, ``model`` and ``evaluation``; MLflow runs through :mod:`ctcid.tracking`.
"""
