#!/usr/bin/env bash
# Create the Secrets deploy/k8s refers to, with random passwords, straight in the cluster: nothing is
# written to disk or committed. Existing Secrets are left as they are (PostgreSQL keeps the passwords
# it was initialised with; to rotate one, ALTER ROLE in the database, then replace the Secret).
#
#   deploy/create-secrets.sh          # mtl-postgres-admin, mtl-mlflow-db, mtl-optuna-db; optuna-db in kubeflow
#   deploy/create-secrets.sh --s3     # also mtl-mlflow-s3 from $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY
#
# Namespaces: MTLP_NAMESPACE (default mtl-pipeline) and KFP_NAMESPACE (default kubeflow, where pipeline
# pods run and read optuna-db).
set -euo pipefail
NS="${MTLP_NAMESPACE:-mtl-pipeline}"
KFP_NS="${KFP_NAMESPACE:-kubeflow}"

rand() { openssl rand -hex 24; }  # hex: safe in any connection string

exists() { kubectl -n "$1" get secret "$2" >/dev/null 2>&1; }

create() {  # create NAMESPACE NAME KEY=VALUE...; the values go through a private temp file, not the command line
    local ns="$1" name="$2"; shift 2
    if exists "$ns" "$name"; then echo "secret $ns/$name exists, kept"; return; fi
    local env_file rc=0
    env_file="$(umask 077 && mktemp)"
    printf '%s\n' "$@" > "$env_file"
    kubectl -n "$ns" create secret generic "$name" --from-env-file="$env_file" >/dev/null || rc=$?
    rm -f "$env_file"
    [ "$rc" = 0 ] || { echo "creating secret $ns/$name failed" >&2; exit "$rc"; }
    echo "secret $ns/$name created"
}

kubectl get namespace "$NS" >/dev/null 2>&1 || kubectl create namespace "$NS"
create "$NS" mtl-postgres-admin "password=$(rand)"
create "$NS" mtl-mlflow-db username=mlflow "password=$(rand)"

# One Optuna password, twice: PostgreSQL creates the role with it (mtl-optuna-db), and the pipeline's
# pods get the study storage URL holding it as OPTUNA_STORAGE (optuna-db, pipeline.config's secrets.database).
if exists "$NS" mtl-optuna-db; then
    optuna_pw="$(kubectl -n "$NS" get secret mtl-optuna-db -o jsonpath='{.data.password}' | base64 -d)"
else
    optuna_pw="$(rand)"
fi
create "$NS" mtl-optuna-db username=optuna "password=$optuna_pw"
create "$KFP_NS" optuna-db \
    "OPTUNA_STORAGE=postgresql+psycopg2://optuna:${optuna_pw}@mtl-postgres.${NS}.svc.cluster.local:5432/optuna"
unset optuna_pw

if [ "${1:-}" = "--s3" ]; then
    : "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}" "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"
    create "$NS" mtl-mlflow-s3 "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
fi
