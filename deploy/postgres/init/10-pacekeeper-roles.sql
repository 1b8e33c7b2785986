-- Pacekeeper roles for the timescale/timescaledb container (docker-compose.yml).
--
-- The image runs this once, on first start with an empty data volume, with psql as the
-- superuser in database `pacekeeper` (POSTGRES_DB), after its own scripts have installed
-- TimescaleDB. Passwords come from the container's environment (local defaults below).
--
--   pacekeeper  owns the database; the services and `pacekeeper migrate` log in as it.
--   grafana     read-only. It may read only what the migrations grant it, one table at a
--               time (kpis, kpi_points, ...), never api_keys or channels (secrets), so
--               there is deliberately no default SELECT on future tables here. Default
--               privileges cover what is safe for every future object: running functions
--               (kpi_series, kpi_value).
\set ON_ERROR_STOP on

\getenv owner_password PACEKEEPER_DB_PASSWORD
\if :{?owner_password}
\else
\set owner_password pacekeeper
\endif
\getenv grafana_password PACEKEEPER_GRAFANA_DB_PASSWORD
\if :{?grafana_password}
\else
\set grafana_password grafana
\endif

-- Also on a plain PostgreSQL server, where the migrations then build the same tables
-- without hypertables.
SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS has_timescaledb
\gset
\if :has_timescaledb
CREATE EXTENSION IF NOT EXISTS timescaledb;
\endif

CREATE ROLE pacekeeper LOGIN PASSWORD :'owner_password';
ALTER DATABASE pacekeeper OWNER TO pacekeeper;
-- Since PostgreSQL 15 the public schema belongs to the database owner (pg_database_owner).

CREATE ROLE grafana LOGIN PASSWORD :'grafana_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION CONNECTION LIMIT 20;
-- Belt and braces: even a mistaken grant cannot let a dashboard write.
ALTER ROLE grafana SET default_transaction_read_only = on;
-- A cost bound for every dashboard query: no viewer can hold the database for minutes.
ALTER ROLE grafana SET statement_timeout = '30s';
-- A runaway panel query must not hold a connection for minutes.
ALTER ROLE grafana SET statement_timeout = '30s';
GRANT CONNECT ON DATABASE pacekeeper TO grafana;
GRANT USAGE ON SCHEMA public TO grafana;
ALTER DEFAULT PRIVILEGES FOR ROLE pacekeeper IN SCHEMA public
    GRANT EXECUTE ON FUNCTIONS TO grafana;
