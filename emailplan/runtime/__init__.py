"""Process runtime shared by every entry point: logging, Sentry, metrics server."""
