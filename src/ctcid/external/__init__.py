"""External validation: cohorts the models never trained on, scored by every model and the rule
(docs/external.md)."""
