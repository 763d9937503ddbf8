#!/bin/bash
# First start of the Postgres volume only (docker-entrypoint-initdb.d): one role and one
# database per concern, so a leaked Airflow password does not open the governance store.
# Passwords come from the environment (deploy/hdp.env.example lists them), never from a file.
set -euo pipefail

create() {  # role database password
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -v role="$1" -v db="$2" -v pw="$3" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
}

# The hub runs no Airflow: its Postgres (hub-postgres) gets no AIRFLOW_DB_PASSWORD and no airflow role.
if [ -n "${AIRFLOW_DB_PASSWORD:-}" ]; then
  create airflow airflow "$AIRFLOW_DB_PASSWORD"
fi
create hdp hdp_governance "${HDP_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -c "CREATE DATABASE hdp_monitoring OWNER hdp" -c "REVOKE ALL ON DATABASE hdp_monitoring FROM PUBLIC"
