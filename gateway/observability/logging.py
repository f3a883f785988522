"""Log lines that carry the request ID, as text or as one JSON object per line.

One `logging.config.dictConfig` dictionary serves the command line, the gateway process and every
uvicorn worker (uvicorn applies it again in each worker it spawns).
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any, Literal, TextIO

from gateway.observability.request_id import current_request_id

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

# Our packages log at the chosen level; the root stays at WARNING because some libraries (onnxruntime's
# quantizer) log every tensor at INFO through it.
PACKAGES = ("samo", "samo_cli", "exporters", "gateway", "load_tests", "uvicorn")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
JSON_FIELDS = ("asctime", "levelname", "name", "process", "request_id", "message")
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record logged while a request is being served (a handler filter, so
    that records from every logger get it, the libraries' included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Always set: dictConfig's formatter `defaults` only exist from Python 3.12 on.
        record.request_id = current_request_id() or getattr(record, "request_id", "-")
        return True


class StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever `sys.stderr` is when a record arrives.

    A handler bound to the stderr of configuration time keeps writing to it after it is replaced:
    a command run in-process under a test runner (typer's CliRunner) leaves every later record,
    from every thread, going to its closed capture buffer.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """Ignored: the stream is always the current stderr."""


def logging_config(log_format: LogFormat = "text", level: LogLevel = "INFO") -> dict[str, Any]:
    """The dictConfig for `log_format` lines on stderr, our packages at `level`."""
    formatter: dict[str, Any]
    if log_format == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS

        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": list(JSON_FIELDS),
            "rename_fields": JSON_RENAMES,
            # uvicorn repeats each message with terminal colours as an extra field.
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"samo": formatter},
        "handlers": {
            "stderr": {
                "()": StderrHandler,
                "formatter": "samo",
                "filters": ["request_id"],
            }
        },
        "root": {"level": "WARNING", "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's own handlers are replaced by ours (same format); its access log stays off.
            "uvicorn": {"level": level, "handlers": ["stderr"], "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            **{name: {"level": level} for name in PACKAGES if name != "uvicorn"},
        },
    }


HANDLER_NAME = "samo-stderr"


def configure_logging(log_format: LogFormat = "text", level: LogLevel = "INFO") -> None:
    """`logging_config` applied to this process without `dictConfig`, which closes every handler in
    the process (a test runner's capture handlers included): only the handler installed by an earlier
    call is replaced. uvicorn's worker processes, which start empty, get `logging_config` itself."""
    config = logging_config(log_format, level)
    configurator = logging.config.DictConfigurator(config)
    handler = StderrHandler()
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(configurator.configure_formatter(dict(config["formatters"]["samo"])))
    handler.addFilter(RequestIdFilter())
    for name, settings in [("", config["root"]), *config["loggers"].items()]:
        logger = logging.getLogger(name)
        logger.setLevel(settings["level"])
        for old in [h for h in logger.handlers if h.get_name() == HANDLER_NAME]:
            logger.removeHandler(old)
        if "handlers" in settings:
            if settings["handlers"]:
                logger.addHandler(handler)
            logger.propagate = settings.get("propagate", True)
