"""gunicorn's access log without the secrets a request line can carry.

A portal link holds its credential in the path (``/portal/<token>/``), and a page of the portal sends
it as the ``Referer`` of the next request to this site. gunicorn writes both to its access log when
one is enabled (``--access-logfile``); this logger passes every value of a log line through the same
redaction as the application's own logs (config.logfilters).
"""

from __future__ import annotations

from gunicorn.glogging import Logger

from config.logfilters import redact


class RedactingLogger(Logger):
    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact(value) if isinstance(value, str) else value for key, value in atoms.items()}
