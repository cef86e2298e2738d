#!/usr/bin/env bash
# First start of the compose PostgreSQL: the application's baseline schema, a small seed, every
# migration in order (psql -f, so CREATE INDEX CONCURRENTLY runs outside a transaction), then
# the seed again for the tables the migrations created.
set -euo pipefail
run() { psql -v ON_ERROR_STOP=1 --no-psqlrc -q -U "$POSTGRES_USER" -d app "$@"; }
psql -v ON_ERROR_STOP=1 --no-psqlrc -q -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE app"
run -f /pgkpi/fixtures/baseline.sql
run -v scale=0.2 -f /pgkpi/fixtures/seed.sql
for migration in /pgkpi/migrations/*.sql; do
  run -f "$migration"
done
run -v scale=0.2 -f /pgkpi/fixtures/seed.sql
