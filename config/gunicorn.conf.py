"""gunicorn settings for production: ``gunicorn -c config/gunicorn.conf.py config.wsgi``.

Flags and GUNICORN_CMD_ARGS still override these; gunicorn reads the number of worker processes from
WEB_CONCURRENCY (one or two per core) and ``--bind`` as usual."""

# Access log lines (when enabled: --access-logfile -) with portal and payment-method tokens masked.
logger_class = "core.gunicorn_logging.RedactingLogger"
# A few threads per process: requests mostly wait on PostgreSQL (the API benchmark runs 8).
worker_class = "gthread"
threads = 8
