"""In-process stand-ins for external services, used only by tests."""
