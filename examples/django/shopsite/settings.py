"""Settings for the courier example: one app, one PostgreSQL database (psycopg 3).

COURIER_DJANGO_DSN is a libpq connection string, e.g. "host=127.0.0.1 port=5432 dbname=shop".
"""

import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ.get("COURIER_DJANGO_DSN", "dbname=shop"))

SECRET_KEY = "courier-example-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["shop"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", "shop"),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    }
}
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"courier": {"handlers": ["console"], "level": "INFO"}},
}
