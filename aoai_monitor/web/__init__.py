"""Web UI: dashboards, Discover, documents and SQL over the store (see app.py)."""
