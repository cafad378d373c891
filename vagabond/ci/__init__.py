"""Continuous integration: the GitHub workflow and action vagabond writes, from their templates."""
