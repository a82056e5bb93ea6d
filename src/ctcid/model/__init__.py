"""The CNN: crops in memory, the five backbones, the training loop, cross-validation, the train
stage and its MLflow log, and saved models that score crops (``predict``).

Imports the shared core and ``split``. The torch code is here (networks, training, scoring);
``tuning`` imports torch too, but only to set the thread count and pass the device. The later
steps reach torch only through this package: evaluation, registry and external load and score
with ``predict`` (and pick the device with ``trainer.resolve_device``), serving through the
registered pyfunc, which calls ``predict``.
"""
