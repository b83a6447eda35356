"""The repository-level tests, a package: see docs/testing.md."""
