"""The text-level model of what a mode installs (tables, chains, rules) and its text forms."""

from .ruleset import Chain, Opt, Rule, Ruleset, Table

__all__ = ["Chain", "Opt", "Rule", "Ruleset", "Table"]
