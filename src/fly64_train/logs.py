"""Logging formatters of the job's handlers (conf/hydra/job_logging/fly64.yaml).

The terminal shows what a job reports as plain lines (warnings and errors with their level) and
never a traceback; the job's log file keeps timestamps, logger names and full tracebacks.
"""
from __future__ import annotations

import logging
import sys


class ConsoleFormatter(logging.Formatter):
    """`message` for INFO and below, `LEVEL: message` above; tracebacks and stacks are left out."""

    def __init__(self) -> None:
        super().__init__("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            text = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        return text if record.levelno <= logging.INFO else f"{record.levelname}: {text}"


# `log.error(..., extra=FILE_ONLY)`: a record for the job's log file that the terminal does not show
# (e.g. a failure's traceback when the terminal already got the one-line error).
FILE_ONLY = {"terminal": False}


class TerminalFilter(logging.Filter):
    """Drops records logged with `extra=FILE_ONLY` from the terminal's handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "terminal", True)


class JobLogHandler(logging.FileHandler):
    """The job's log file. When it cannot be written (a full disk, a directory gone read-only) it
    stops, silently: the job's own error line names that fault, where logging's default would
    print a traceback per record."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def flush(self) -> None:
        from fly64_train.files import is_storage_fault

        try:
            super().flush()
        except OSError as error:
            if not is_storage_fault(error):
                raise
            self.broken = True

    def handleError(self, record: logging.LogRecord) -> None:
        from fly64_train.files import is_storage_fault

        if is_storage_fault(sys.exc_info()[1]):
            self.broken = True
            return
        super().handleError(record)
