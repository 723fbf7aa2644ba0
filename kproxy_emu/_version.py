"""The package version (pyproject.toml says the same); a leaf module the CLI can import."""

__version__ = "0.1.0"
