"""gunicorn's access log without the secrets a request line can carry.

A portal link holds its credential in the path (``/portal/<token>/``), and a page of the portal sends
it as the ``Referer`` of the next request to this site. gunicorn writes both to its access log when
one is enabled (``--access-logfile``), and its error log names the request of an unhandled error;
this logger passes both through the same redaction as the application's own logs (core.logfilters).
"""

from __future__ import annotations

from gunicorn.glogging import Logger

from core.logfilters import RedactSecrets, redact


class RedactingLogger(Logger):
    def setup(self, cfg):
        super().setup(cfg)
        # The error log names the request too ("Error handling request /portal/<token>/").
        self.error_log.addFilter(RedactSecrets())

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact(value) if isinstance(value, str) else value for key, value in atoms.items()}
