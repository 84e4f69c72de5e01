# Throwaway PostgreSQL clusters for tests, the demo and benchmarks. Source this file.
#
# initdb and postgres refuse to run as root, so when we are root the cluster belongs to the
# `postgres` OS user (created by the postgresql package); otherwise it belongs to the caller.
# Sockets live in the cluster directory and the server listens on no TCP address, so clusters
# never collide with a system PostgreSQL or with each other.

PG_BINDIR="${PG_BINDIR:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}"

_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# cluster_start DIR PORT [postgresql.conf lines...]
# Creates (if needed) and starts a cluster in DIR; exports PGHOST, PGPORT, PGUSER, PGDATABASE.
cluster_start() {
    local dir="$1" port="$2"
    shift 2
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
        chmod 700 "$dir"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        _as_owner "$PG_BINDIR/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            return 1
        }
        {
            echo "listen_addresses = ''"
            echo "unix_socket_directories = '$dir'"
            echo "port = $port"
            echo "fsync = on"
            echo "synchronous_commit = on"
            echo "max_connections = 200"
            echo "log_min_messages = warning"
            echo "log_line_prefix = '%m [%p] '"
            for line in "$@"; do echo "$line"; done
        } | _as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
    fi
    _as_owner "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null || {
        tail -n 30 "$dir/server.log" >&2
        return 1
    }
    export PGHOST="$dir" PGPORT="$port" PGUSER=postgres PGDATABASE=postgres
}

# cluster_stop DIR [mode]
cluster_stop() {
    local dir="$1" mode="${2:-fast}"
    if [ -f "$dir/data/postmaster.pid" ]; then
        _as_owner "$PG_BINDIR/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
    fi
}

# cluster_destroy DIR
cluster_destroy() {
    cluster_stop "$1" immediate
    rm -rf "$1"
}
