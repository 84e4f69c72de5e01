#!/usr/bin/env bash
# The Python client (clients/python) and the Python examples (sqlalchemy, django, asyncpg), against
# a throwaway cluster and a PgBouncer in front of it:
#
#   examples/python-test.sh WORKDIR PORT        PostgreSQL on 127.0.0.1:PORT, PgBouncer on PORT+1
#
# Installs its tools into a virtualenv from clients/python/requirements-dev.lock (hashes
# required; kept in target/ between runs, keyed by the lock's hash), builds the courier-queue
# wheel and tests the installed wheel: ruff, mypy --strict, then pytest. The courier extension must
# be installed in the PostgreSQL that PG_BINDIR (or pg_config) names.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(realpath -m "$1")
PORT=$2
BOUNCER_PORT=$((PORT + 1))
# shellcheck source=bin/lib/cluster.sh
source bin/lib/cluster.sh
mkdir -p "$WORK"
chmod 755 "$WORK"

step() { printf -- '--> %s\n' "$*"; }

LOCK=clients/python/requirements-dev.lock
VENV="$ROOT/target/python-venv-$(sha256sum "$LOCK" | cut -c1-16)"
if [ ! -f "$VENV/.complete" ]; then
    step "virtualenv from $LOCK"
    rm -rf "$VENV"
    mkdir -p "$ROOT/target"
    python3 -m venv "$VENV"
    nice -n 19 "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps -r "$LOCK"
    touch "$VENV/.complete"
fi
export PATH="$VENV/bin:$PATH"

step "wheel: build courier-queue, install it, check it ships py.typed"
rm -rf "$WORK/dist"
pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation clients/python -w "$WORK/dist"
pip install -q --disable-pip-version-check --no-deps --force-reinstall "$WORK"/dist/courier_queue-*.whl
python3 - "$WORK"/dist/courier_queue-*.whl <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert "courier/py.typed" in names and "courier/worker.py" in names, names
print(sys.argv[1].rsplit("/", 1)[1], len(names), "files")
PY

step "lint: ruff, mypy --strict"
PY_DIRS=(clients/python examples/sqlalchemy examples/django examples/asyncpg)
ruff check --no-cache "${PY_DIRS[@]}"
ruff format --no-cache --check "${PY_DIRS[@]}"
(cd clients/python && mypy --cache-dir "$WORK/mypy-cache")
# The SQLAlchemy example against the installed wheel's types (Django and asyncpg ship no types).
mypy --strict --cache-dir "$WORK/mypy-cache" examples/sqlalchemy/shop.py

step "PostgreSQL on 127.0.0.1:$PORT, PgBouncer $(pgbouncer --version | head -1 | cut -d' ' -f2) on 127.0.0.1:$BOUNCER_PORT"
BOUNCER="$WORK/pgbouncer"
cleanup() {
    [ -f "$BOUNCER/pgbouncer.pid" ] && kill "$(cat "$BOUNCER/pgbouncer.pid")" 2>/dev/null || true
    cluster_destroy "$WORK/pg" || true
}
trap cleanup EXIT
cluster_start "$WORK/pg" "$PORT" "listen_addresses = '127.0.0.1'" \
    "shared_preload_libraries = 'courier'" "max_connections = 300"
psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE courier_py"
psql -X -q -v ON_ERROR_STOP=1 -d courier_py -c "CREATE EXTENSION courier"

mkdir -p "$BOUNCER"
echo '"postgres" ""' >"$BOUNCER/users.txt"
# One server database behind three pools: the default (transaction pooling), a pool of one
# server connection (for the pool-sizing test) and a session-pooled one (LISTEN works there).
cat >"$BOUNCER/pgbouncer.ini" <<INI
[databases]
courier_py = host=127.0.0.1 port=$PORT dbname=courier_py pool_size=20
courier_py_one = host=127.0.0.1 port=$PORT dbname=courier_py pool_size=1
courier_py_session = host=127.0.0.1 port=$PORT dbname=courier_py pool_size=4 pool_mode=session

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $BOUNCER/users.txt
pool_mode = transaction
max_client_conn = 200
logfile = $BOUNCER/pgbouncer.log
pidfile = $BOUNCER/pgbouncer.pid
INI
if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$BOUNCER"
    runuser -u postgres -- pgbouncer -q -d "$BOUNCER/pgbouncer.ini"
else
    pgbouncer -q -d "$BOUNCER/pgbouncer.ini"
fi
for _ in $(seq 50); do
    psql -X -q -h 127.0.0.1 -p "$BOUNCER_PORT" -d courier_py -c "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
done

step "pytest: client, worker faults, PgBouncer, examples"
export COURIER_TEST_DSN="host=127.0.0.1 port=$PORT user=postgres dbname=courier_py"
export COURIER_TEST_BOUNCER="host=127.0.0.1 port=$BOUNCER_PORT user=postgres"
export COURIER_TEST_WORK="$WORK"
export PYTHONDONTWRITEBYTECODE=1
pytest -p no:cacheprovider -q -n 4 --durations=8 \
    clients/python/tests examples/sqlalchemy examples/django examples/asyncpg
