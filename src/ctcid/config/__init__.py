"""ctcid's configuration: params.yaml as typed, validated sections.

One module per section (``simulate``, ``segment``, ``validate``, ``split``, ``train``, ``tune``,
``mlflow``, ``registry``, ``serving``, ``drift``, ``external``), the whole file in :mod:`.params`,
and :mod:`.loader`, the one place that reads it. A pipeline step imports the section modules it
uses and receives only its stage's :class:`~ctcid.config.stage.StageConfig`, so that its DVC stage
depends on those modules alone: editing the serving section re-runs no training.

This package imports nothing on purpose; import from the module that defines a name.
"""
