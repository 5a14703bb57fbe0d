#!/usr/bin/env bash
# Create the Secrets deploy/k8s refers to, with random passwords, straight in the cluster: nothing is
# written to disk or committed. Existing Secrets are left as they are (PostgreSQL keeps the passwords
# it was initialised with; to rotate one, ALTER ROLE in the database, then replace the Secret).
#
#   deploy/create-secrets.sh          # mtl-postgres-admin, mtl-mlflow-db, mtl-optuna-db; optuna-db in kubeflow;
#                                     # MLflow's users: mtl-mlflow-admin, mtl-mlflow-pipeline (+ mlflow-credentials
#                                     # in kubeflow, the same user), mtl-serving-mlflow; mtl-mlflow-people from
#                                     # $MTLP_PEOPLE_FILE (name:password:role lines) when it is set
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

# MLflow's basic-auth users (deploy/README.md "Security"); the mlflow-users Job creates them from these.
create "$NS" mtl-mlflow-admin "password=$(rand)" "flask-secret-key=$(rand)"
# The pipeline's MLflow user, twice: the Job creates the user from mtl-mlflow-pipeline, the pipeline's pods sign
# in with mlflow-credentials (pipeline.config's secrets.mlflow: MLFLOW_TRACKING_USERNAME / _PASSWORD).
if exists "$NS" mtl-mlflow-pipeline; then
    pipeline_pw="$(kubectl -n "$NS" get secret mtl-mlflow-pipeline -o jsonpath='{.data.password}' | base64 -d)"
else
    pipeline_pw="$(rand)"
fi
create "$NS" mtl-mlflow-pipeline username=pipeline "password=$pipeline_pw"
create "$KFP_NS" mlflow-credentials MLFLOW_TRACKING_USERNAME=pipeline "MLFLOW_TRACKING_PASSWORD=$pipeline_pw"
unset pipeline_pw
# The model server reads the registry as user model-server (a reader; the mlflow-users Job creates it).
if exists "$NS" mtl-serving-mlflow; then
    serving_pw="$(kubectl -n "$NS" get secret mtl-serving-mlflow -o jsonpath='{.data.password}' | base64 -d)"
else
    serving_pw="$(rand)"
fi
create "$NS" mtl-serving-mlflow username=model-server "password=$serving_pw"
unset serving_pw
# People: one name:password:role line each (role promoter or reader), from a file you keep outside the repo.
if [ -n "${MTLP_PEOPLE_FILE:-}" ] && ! exists "$NS" mtl-mlflow-people; then
    kubectl -n "$NS" create secret generic mtl-mlflow-people --from-file=users="$MTLP_PEOPLE_FILE" >/dev/null
    echo "secret $NS/mtl-mlflow-people created"
fi

if [ "${1:-}" = "--s3" ]; then
    : "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}" "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"
    create "$NS" mtl-mlflow-s3 "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
fi
