"""The operator console: a page served by the daemon at `/`, its JSON views and live stream."""

from daemon.console.routes import ConsoleSources, console_blueprint

__all__ = ["ConsoleSources", "console_blueprint"]
