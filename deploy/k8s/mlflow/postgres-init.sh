#!/bin/bash
# Runs once, when the postgres image initialises an empty data directory: one role and one database
# each for MLflow and Optuna (MLflow has a second one, mlflow_auth, for its users and permissions), so that neither can touch the other's tables. The passwords come from
# Secrets as environment variables and psql reads them with \getenv, so they are in no command line.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv optuna_password OPTUNA_DB_PASSWORD
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
CREATE DATABASE mlflow_auth OWNER mlflow;
REVOKE ALL ON DATABASE mlflow_auth FROM PUBLIC;
CREATE ROLE optuna LOGIN PASSWORD :'optuna_password';
CREATE DATABASE optuna OWNER optuna;
REVOKE ALL ON DATABASE optuna FROM PUBLIC;
SQL
