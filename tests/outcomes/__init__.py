"""Tests of pipelines.outcomes (issue 17)."""
