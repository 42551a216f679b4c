#!/bin/sh
# Runs once, when the postgres image initialises an empty data volume, as the superuser `postgres` (which the image
# creates with POSTGRES_PASSWORD): the roles and the database of the native stack (native/up.sh), with least
# privilege:
#   app                the service: owns schema `app` in database `app`, nothing else (no superuser, CREATEDB or
#                      CREATEROLE); the public schema is closed
#   postgres_exporter  pg_monitor only: statistics, no table of the app
# The passwords come from compose/.env (PG_APP_PASSWORD, PG_EXPORTER_PASSWORD, written by compose/secrets.sh) and
# reach psql as variables, so no character in them can change a statement. A volume initialised before this script
# existed keeps its roles (there `app` is the superuser): `docker compose down -v` re-creates it, losing its data.
set -eu
psql -v ON_ERROR_STOP=1 -qAt -v app_pw="$PG_APP_PASSWORD" -v exporter_pw="$PG_EXPORTER_PASSWORD" \
  -U "$POSTGRES_USER" -d postgres <<'SQL'
CREATE ROLE app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_pw';
CREATE DATABASE app;
REVOKE ALL ON DATABASE app FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE app TO app;
CREATE ROLE postgres_exporter LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'exporter_pw';
GRANT pg_monitor TO postgres_exporter;
GRANT CONNECT ON DATABASE app TO postgres_exporter;
\connect app
REVOKE ALL ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA app AUTHORIZATION app;
ALTER ROLE app IN DATABASE app SET search_path = app;
SQL
