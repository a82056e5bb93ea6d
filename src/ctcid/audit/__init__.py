"""The audit step: the sealed cohorts, scored once, by an explicit step no decision reads."""
