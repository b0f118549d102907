#!/usr/bin/env bash
# Start a local PostgreSQL server for the multi-machine tests; prints the URL for the tests.
# Installs Debian's postgresql when missing. Safe to run twice.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_lsclusters -h | grep -q "^$version main" || pg_createcluster "$version" main >&2
pg_ctlcluster "$version" main start >&2 2>/dev/null || pg_ctlcluster "$version" main status >/dev/null
for _ in $(seq 30); do pg_isready -q -h localhost && break; sleep 1; done
runuser -u postgres -- psql -qtAc "SELECT 1 FROM pg_roles WHERE rolname='tuning'" | grep -q 1 \
  || runuser -u postgres -- psql -qc "CREATE ROLE tuning LOGIN PASSWORD 'tuning'" >&2
runuser -u postgres -- psql -qtAc "SELECT 1 FROM pg_database WHERE datname='tuning_test'" | grep -q 1 \
  || runuser -u postgres -- createdb -O tuning tuning_test >&2
echo "postgresql+psycopg://tuning:tuning@localhost/tuning_test"
