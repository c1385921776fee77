#!/usr/bin/env bash
# The demo: a small shop project with sample data, a real Celery worker on
# Redis, and pgclone dumping the shop's database, listing the dumps, restoring
# the newest one (reversibly) and going back to the database as it was.
set -euo pipefail
source "$(dirname "$0")/../env.sh"
cd "$REPO_ROOT/deploy/demo"
PY="$VENV/bin/python"
export DEMO_DATABASE="${DEMO_DATABASE:-pgclone_demo}"
export DEMO_ROLE="${DEMO_ROLE:-pgclone_demo}"
LOG="$(mktemp -d)/worker.log"

step() { printf '\n==> %s\n' "$*"; }

step "Creating the demo role $DEMO_ROLE and database $DEMO_DATABASE with sample data"
# The project connects as a role that owns its database and may create databases,
# not as a superuser (pgclone refuses to restore as one). Setting up the role and
# the database takes the server's administrator ($ADMIN).
ADMIN="${PGUSER:-postgres}"
admin_sql() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$ADMIN" -XAtq -v ON_ERROR_STOP=1 -d postgres -c "$1"; }
if [ -z "$(admin_sql "SELECT 1 FROM pg_roles WHERE rolname = '$DEMO_ROLE'")" ]; then
    admin_sql "CREATE ROLE \"$DEMO_ROLE\" LOGIN CREATEDB NOSUPERUSER"
fi
owner="$(admin_sql "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$DEMO_DATABASE'")"
if [ -n "$owner" ] && [ "$owner" != "$DEMO_ROLE" ]; then
    echo "($DEMO_DATABASE was made by an earlier demo as $owner: recreating it for $DEMO_ROLE)"
    for name in "$DEMO_DATABASE" "${DEMO_DATABASE}__previous" "${DEMO_DATABASE}__current"; do
        admin_sql "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)"
    done
    owner=""
fi
if [ -z "$owner" ]; then
    admin_sql "CREATE DATABASE \"$DEMO_DATABASE\" OWNER \"$DEMO_ROLE\""
fi
"$PY" manage.py migrate --verbosity 0
"$PY" manage.py demo_seed --orders 20000

step "Starting a Celery worker on the 'pgclone' queue (log: $LOG)"
"$VENV/bin/celery" -A demo_project worker --queues pgclone --concurrency 1 \
    --hostname "pgclone-demo@%h" --loglevel INFO >"$LOG" 2>&1 &
WORKER=$!
trap 'kill -TERM $WORKER 2>/dev/null; wait $WORKER 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
    "$VENV/bin/celery" -A demo_project inspect ping --destination "pgclone-demo@$(hostname)" \
        --timeout 1 >/dev/null 2>&1 && break
    kill -0 $WORKER 2>/dev/null || { cat "$LOG"; echo "The worker died." >&2; exit 1; }
done

step "manage.py pgclone dump --wait"
"$PY" manage.py pgclone dump --wait

step "manage.py pgclone dump --config anonymous --wait (subscribers' rows left out)"
"$PY" manage.py pgclone dump --config anonymous --wait

step "manage.py pgclone verify $DEMO_DATABASE --restore --wait (a trial restore of its newest dump)"
"$PY" manage.py pgclone verify "$DEMO_DATABASE" --restore --wait

step "manage.py pgclone ls --long and health"
"$PY" manage.py pgclone ls --long
"$PY" manage.py pgclone health

"$PY" manage.py demo_counts

step "manage.py pgclone scrub-check --config safe (every column that can hold text decided)"
"$PY" manage.py pgclone scrub-check --config safe | grep -v "kept by default"

step "manage.py pgclone dump --config safe --wait (scrubbed in PostgreSQL, 10% of the customers)"
"$PY" manage.py pgclone dump --config safe --wait
"$PY" manage.py pgclone ls --long | tail -n 1

step "manage.py pgclone restore $DEMO_DATABASE --reversible --wait (its newest dump: the safe one)"
"$PY" manage.py pgclone restore "$DEMO_DATABASE" --reversible --wait --noinput
"$PY" manage.py demo_counts

step "manage.py pgclone ls --local"
"$PY" manage.py pgclone ls --local

step "manage.py pgclone restore :previous --wait (back to the database as it was)"
"$PY" manage.py pgclone restore :previous --wait --noinput
"$PY" manage.py demo_counts

step "manage.py pgclone jobs (history survived both swaps)"
"$PY" manage.py pgclone jobs --limit 5

printf "\nDone. Dumps are in %s; the demo role %s owns the database %s (and its __previous copy).\n" "$REPO_ROOT/deploy/demo/.pgclone/" "$DEMO_ROLE" "$DEMO_DATABASE"
