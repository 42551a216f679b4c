#!/bin/sh
# Runs once, when the postgres image initialises an empty data volume: the exporter's own monitoring role, as the
# native stack creates it (native/up.sh). The password comes from compose/.env through PG_EXPORTER_PASSWORD and is
# passed as a psql variable, so no quoting in it can change the statement.
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$PG_EXPORTER_PASSWORD" -U "$POSTGRES_USER" -d "$POSTGRES_DB" <<'SQL'
CREATE ROLE postgres_exporter LOGIN PASSWORD :'pw';
GRANT pg_monitor TO postgres_exporter;
SQL
