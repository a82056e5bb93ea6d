"""Room for the tune step (next issue): Optuna studies of each backbone under the split's CV folds,
calling :func:`ctcid.model.cv.cross_validate`. May import the shared core, ``split`` and ``model``.
"""
