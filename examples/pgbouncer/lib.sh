# A throwaway PgBouncer (Debian's 1.18) in front of a test cluster. Source this file.
#
# pgbouncer refuses to run as root, so when we are root it runs as the `postgres` OS user, like
# the clusters of bin/lib/cluster.sh. It listens on 127.0.0.1 only (no Unix socket), trusts
# every user listed in its auth file, and logs to DIR/pgbouncer.log.

_pgb_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# pgbouncer_start DIR LISTEN_PORT SERVER_PORT [setting...]
#   Every database name is passed to the PostgreSQL at 127.0.0.1:SERVER_PORT in transaction
#   pooling. A setting "key = value" goes to the [pgbouncer] section (e.g. "default_pool_size = 1");
#   a setting "db:name = connstr" adds a [databases] entry (e.g. an alias with pool_mode=session).
pgbouncer_start() {
    local dir="$1" port="$2" server_port="$3"
    shift 3
    local settings=() databases=() s
    for s in "$@"; do
        case "$s" in
            db:*) databases+=("${s#db:}") ;;
            *) settings+=("$s") ;;
        esac
    done
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    {
        echo '"postgres" ""'
    } | _pgb_as_owner tee "$dir/userlist.txt" >/dev/null
    {
        echo "[databases]"
        for s in "${databases[@]}"; do echo "$s"; done
        echo "* = host=127.0.0.1 port=$server_port"
        echo "[pgbouncer]"
        echo "listen_addr = 127.0.0.1"
        echo "listen_port = $port"
        echo "unix_socket_dir ="
        echo "auth_type = trust"
        echo "auth_file = $dir/userlist.txt"
        echo "admin_users = postgres"
        echo "pool_mode = transaction"
        echo "max_client_conn = 200"
        echo "logfile = $dir/pgbouncer.log"
        echo "pidfile = $dir/pgbouncer.pid"
        # drivers that send it at startup (pgjdbc, asyncpg, psycopg's libpq does not)
        echo "ignore_startup_parameters = extra_float_digits"
        for s in "${settings[@]}"; do echo "$s"; done
    } | _pgb_as_owner tee "$dir/pgbouncer.ini" >/dev/null
    _pgb_as_owner pgbouncer -d -q "$dir/pgbouncer.ini" || {
        tail -n 20 "$dir/pgbouncer.log" >&2
        return 1
    }
    # -d returns once the daemon forked; wait for the listener.
    local i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "pgbouncer did not start listening on $port" >&2
    tail -n 20 "$dir/pgbouncer.log" >&2
    return 1
}

# pgbouncer_stop DIR: stops the PgBouncer started in DIR (if it runs) and waits for it to exit.
pgbouncer_stop() {
    local dir="$1" pid i
    [ -f "$dir/pgbouncer.pid" ] || return 0
    pid=$(cat "$dir/pgbouncer.pid")
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
}
