"""Checks of the observability assets: dashboard, alert rules, compose stack, example service."""
