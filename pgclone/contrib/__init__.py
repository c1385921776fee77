"""Integrations with other packages, each an optional extra."""
