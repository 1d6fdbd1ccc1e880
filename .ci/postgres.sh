#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests/test_postgres.py.
#
# Sourced by .ci/run: installs PostgreSQL with apt-get if its server binaries are missing, starts
# a cluster in a temporary folder (unix socket there too, TCP on a free port of 127.0.0.1),
# creates a role with a random password (allowed to create databases) and a database, exports
#   MLOPS_TEST_POSTGRES_URL=postgresql://mlops:PASSWORD@127.0.0.1:PORT/mlops
# and stops the cluster and removes its folder when the sourcing shell exits (an EXIT trap).
# It never fails the caller: if PostgreSQL cannot be installed or started it says why and leaves
# the variable unset (the test then fails under CI=1 and skips elsewhere).
#
# By hand, for development (the cluster keeps running until stopped):
#   eval "$(.ci/postgres.sh start)"     # prints the export line and the stop command
#   .ci/postgres.sh stop FOLDER
#
# initdb and postgres refuse to run as root: as root, they run as the `postgres` user (created
# by the Debian package) through runuser.

_mlops_pg_log() { echo "postgres.sh: $*" >&2; }

# The folder with initdb, pg_ctl and postgres: on PATH, or Debian's /usr/lib/postgresql/N/bin.
_mlops_pg_bindir() {
    local d
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

_mlops_pg_install() {
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        _mlops_pg_log "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
        return 1
    fi
    _mlops_pg_log "installing PostgreSQL (apt-get install postgresql)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null
}

# Run a PostgreSQL program as a user it accepts (postgres when we are root).
_mlops_pg_as() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

_mlops_pg_free_port() {
    local py
    for py in "${PYTHON:-}" python3 python; do
        if [[ -n $py ]] && command -v "$py" >/dev/null 2>&1; then
            "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
            return
        fi
    done
    echo $((20000 + RANDOM % 20000))
}

# Start a cluster; on success prints "FOLDER PORT PASSWORD" on stdout.
_mlops_pg_start_cluster() {
    local bin dir port pw attempt
    bin=$(_mlops_pg_bindir) || { _mlops_pg_install && bin=$(_mlops_pg_bindir); } || {
        _mlops_pg_log "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found"
        return 1
    }
    if [[ $(id -u) == 0 ]] && ! id postgres >/dev/null 2>&1; then
        _mlops_pg_log "running as root and there is no 'postgres' user to run initdb as"
        return 1
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/mlops-pg.XXXXXX") || return 1
    chmod 755 "$dir"
    [[ $(id -u) == 0 ]] && chown postgres: "$dir"
    pw=$(openssl rand -hex 16 2>/dev/null || echo "pw$RANDOM$RANDOM$RANDOM")
    printf '%s\n' "$pw" > "$dir/pwfile"
    [[ $(id -u) == 0 ]] && chown postgres: "$dir/pwfile"
    chmod 600 "$dir/pwfile"
    if ! _mlops_pg_as "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$dir/initdb.log" 2>&1; then
        _mlops_pg_log "initdb failed:"; tail -n 20 "$dir/initdb.log" >&2
        rm -rf "$dir"; return 1
    fi
    for attempt in 1 2 3; do  # a port taken between choosing and binding: choose again
        port=$(_mlops_pg_free_port)
        if _mlops_pg_as "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
                -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
                start >/dev/null 2>&1; then
            break
        fi
        port=""
    done
    if [[ -z $port ]]; then
        _mlops_pg_log "the server did not start:"; tail -n 20 "$dir/server.log" >&2
        rm -rf "$dir"; return 1
    fi
    # the role may create databases (the test makes one each for metadata, MLflow and Prefect)
    if ! _mlops_pg_as "$bin/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres \
            -v ON_ERROR_STOP=1 -v pw="$pw" >"$dir/setup.log" 2>&1 <<'SQL'
CREATE ROLE mlops LOGIN CREATEDB PASSWORD :'pw';
CREATE DATABASE mlops OWNER mlops;
SQL
    then
        _mlops_pg_log "creating the role and database failed:"; cat "$dir/setup.log" >&2
        _mlops_pg_stop "$dir"; return 1
    fi
    echo "$dir $port $pw"
}

# Stop the cluster in FOLDER and remove the folder.
_mlops_pg_stop() {
    local dir=$1 bin
    [[ -d $dir/data ]] || { rm -rf "$dir"; return 0; }
    bin=$(_mlops_pg_bindir) && _mlops_pg_as "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 \
        stop >/dev/null 2>&1
    rm -rf "$dir"
}

# For .ci/run (sourced): start, export the URL, stop on exit. Never fails.
mlops_postgres_up() {
    local got dir port pw t0=$SECONDS
    if [[ -n ${MLOPS_TEST_POSTGRES_URL:-} ]]; then
        _mlops_pg_log "MLOPS_TEST_POSTGRES_URL is already set: using that server"
        return 0
    fi
    if ! got=$(_mlops_pg_start_cluster); then
        _mlops_pg_log "PostgreSQL is not available: MLOPS_TEST_POSTGRES_URL stays unset"
        return 0
    fi
    read -r dir port pw <<<"$got"
    export MLOPS_TEST_POSTGRES_URL="postgresql://mlops:$pw@127.0.0.1:$port/mlops"
    _MLOPS_PG_DIR=$dir
    trap '_mlops_pg_stop "$_MLOPS_PG_DIR"' EXIT
    _mlops_pg_log "PostgreSQL on 127.0.0.1:$port (data in $dir), up in $((SECONDS - t0)) s"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then  # run by hand, not sourced
    set -uo pipefail
    case ${1:-start} in
        start)
            got=$(_mlops_pg_start_cluster) || exit 1
            read -r dir port pw <<<"$got"
            echo "export MLOPS_TEST_POSTGRES_URL=postgresql://mlops:$pw@127.0.0.1:$port/mlops"
            echo "# stop with: $0 stop $dir"
            ;;
        stop) _mlops_pg_stop "${2:?usage: $0 stop FOLDER}" ;;
        *) echo "usage: $0 [start | stop FOLDER]" >&2; exit 2 ;;
    esac
fi
