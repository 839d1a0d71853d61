"""SQLite persistence: messages, floors, peers and their vectors."""
