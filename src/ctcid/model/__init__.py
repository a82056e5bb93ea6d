"""The CNN: crops in memory, the five backbones, the training loop, cross-validation, the train
stage and its MLflow log, and saved models that score crops (``predict``).

Imports the shared core and ``split``; the only step with torch.
"""
