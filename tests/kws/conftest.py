"""Fixtures of the keyword-spotting tests: ``tone_data`` is in tests/conftest.py, shared with
the command-line tests."""
