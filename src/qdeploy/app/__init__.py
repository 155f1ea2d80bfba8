"""Web app and HTTP API (imports the library, never the reverse)."""
