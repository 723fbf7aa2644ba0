"""Proxy modes: each compiles the proxy view into a Ruleset (and later an engine's tables)."""
