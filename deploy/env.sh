# Sourced by tests/run.sh and deploy/demo/run.sh: prepares a machine to run
# pgclone. Creates .venv with the project, its test extras and psycopg2 installed, and
# makes sure PostgreSQL and Redis answer on loopback, starting the local
# servers when they are installed but stopped. Stops with a message naming
# what is missing otherwise.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PGCLONE_VENV:-$REPO_ROOT/.venv}"
PG_HOST="${PGHOST:-127.0.0.1}"
PG_PORT="${PGPORT:-5432}"
REDIS_HOST=127.0.0.1
REDIS_PORT=6379

die() {
    echo "pgclone: $*" >&2
    exit 3
}

answers() { # host port
    "$VENV/bin/python" - "$1" "$2" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
except OSError:
    sys.exit(1)
PY
}

wait_until_answers() { # name host port
    for _ in $(seq 1 60); do
        answers "$2" "$3" && return 0
        sleep 0.5
    done
    die "$1 was started but does not answer on $2:$3."
}

setup_venv() {
    local python="${PYTHON:-python3}"
    command -v "$python" >/dev/null || die "python3 (3.11 or newer) is missing."
    if [ ! -x "$VENV/bin/python" ]; then
        "$python" -m venv "$VENV" || die "could not create a virtualenv at $VENV (install python3-venv)."
    fi
    # The main combination of the supported matrix (noxfile.py runs the
    # others): Django 5.2 with psycopg2 and django-pgconnection, on this Python.
    # Only one driver: Django takes psycopg 3 whenever it can be imported.
    local spec=(-e "$REPO_ROOT[test,psycopg2]" "Django>=5.2,<5.3")
    # Reinstall only when the project's dependencies changed.
    local stamp="$VENV/.pgclone-installed"
    local wanted
    wanted="$({ cat "$REPO_ROOT/pyproject.toml"; echo "${spec[*]}"; } | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet "${spec[@]}"
        echo "$wanted" >"$stamp"
    fi
}

ensure_postgres() {
    for tool in pg_dump pg_restore psql; do
        command -v "$tool" >/dev/null || die "$tool is missing: install the PostgreSQL client tools (apt-get install postgresql-client)."
    done
    answers "$PG_HOST" "$PG_PORT" && return 0
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        echo "Starting the local PostgreSQL server..." >&2
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start ||
            die "PostgreSQL is installed but would not start (see pg_ctlcluster's message above)."
        wait_until_answers PostgreSQL "$PG_HOST" "$PG_PORT"
    else
        die "PostgreSQL does not answer on $PG_HOST:$PG_PORT and no local server is installed (apt-get install postgresql)."
    fi
}

ensure_redis() {
    answers "$REDIS_HOST" "$REDIS_PORT" && return 0
    if command -v redis-server >/dev/null; then
        echo "Starting the local Redis server..." >&2
        redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null ||
            die "Redis is installed but would not start."
        wait_until_answers Redis "$REDIS_HOST" "$REDIS_PORT"
    else
        die "Redis does not answer on $REDIS_HOST:$REDIS_PORT and redis-server is not installed (apt-get install redis-server)."
    fi
}

ensure_chromium() {
    # Only the browser test needs it; it is skipped (saying why) when it can't be had.
    command -v chromium >/dev/null && command -v chromedriver >/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Installing Debian's chromium and chromium-driver for the browser test..." >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            chromium chromium-driver; } >/dev/null 2>&1 ||
            echo "pgclone: could not install chromium; the browser test will be skipped." >&2
    else
        echo "pgclone: chromium/chromedriver missing; the browser test will be skipped." >&2
    fi
}

ensure_postgis() {
    # Only tests/integration/test_extensions.py needs it (on the server, for
    # CREATE EXTENSION postgis); it is skipped, naming the package, without it.
    local psql=(psql -h "$PG_HOST" -p "$PG_PORT" -U "${PGUSER:-postgres}" -d postgres -AtX)
    local found
    found="$("${psql[@]}" -c "SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'" 2>/dev/null)" || return 0
    [ "$found" = 1 ] && return 0
    local package
    package="postgresql-$(( $("${psql[@]}" -c 'SHOW server_version_num') / 10000 ))-postgis-3"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -d /etc/postgresql ]; then
        echo "Installing Debian's $package for the extensions' tests..." >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            "$package"; } >/dev/null 2>&1 ||
            echo "pgclone: could not install $package; the PostGIS tests will be skipped." >&2
    else
        echo "pgclone: PostGIS ($package) is not installed on the server; the PostGIS tests will be skipped." >&2
    fi
}

setup_venv
ensure_postgres
ensure_redis
