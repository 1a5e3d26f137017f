"""Node Agenda 6's own test suites, ported file for file (a package: ``test_backoff`` also names a unit test)."""
