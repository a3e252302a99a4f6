"""JSON log lines for log collectors (`[logging] format = "json"` or `--log-format json`).

One object per line: time (ISO 8601, UTC), level, logger, message, and `job` when the message names one
(`job=12`), plus the traceback under `exc_info`. Secrets are scrubbed before formatting by the same
filter as the text format (bot.log_setup).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

_JOB = re.compile(r"\bjob=(\d+)\b")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        job = _JOB.search(message)
        if job is not None:
            line["job"] = int(job.group(1))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)
