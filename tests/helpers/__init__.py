"""Fakes and fixtures shared by the tests: engines, tasks, run directories and user plugins."""
