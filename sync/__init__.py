"""The sync engine, its errors, the Notifier protocol, the scheduler tick and dispatchers."""
