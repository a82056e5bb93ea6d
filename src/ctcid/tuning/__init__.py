"""The tune step (``ctcid tune``): one Optuna study per backbone under the split's CV folds, each
trial a :func:`ctcid.model.cv.cross_validate` of the values it draws (docs/tuning.md).

``tune`` runs the stage, ``study`` opens the study (storage, name, sampler, pruner, heartbeats) and
picks the best trial, ``objective`` is one trial, ``space`` the searched values, ``run_log`` the
nested MLflow runs, ``figures`` the plots, ``report`` ``reports/tune/<backbone>.json`` and the
closing summary, ``progress`` the per-trial lines on the terminal. Imports the shared core,
``split`` and ``model``; uses torch itself only for the thread count and the device.
"""
