"""deploy/k8s security: MLflow behind its basic-auth app with credentials from Secrets, the users Job, and the
NetworkPolicies (whose selectors must match the pods they are about). Schema validation of these objects is in
test_deploy_manifests.py (every rendered object)."""

from __future__ import annotations

import configparser

from _deploy_helpers import K8S, KFP_NS, _container, _one, _pod_spec, base, serving  # noqa: F401


def _policies(docs):
    return {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}


def _pod_labels(docs, kind, name):
    return _one(docs, kind, name)["spec"]["template"]["metadata"]["labels"]


def _selects(selector, labels) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_mlflow_runs_the_basic_auth_app_with_its_secrets(base):
    mlflow = _one(base, "Deployment", "mlflow")
    c = _container(base, "Deployment", "mlflow", "mlflow")
    assert "--app-name=basic-auth" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mtl-mlflow-admin"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mtl-mlflow-admin"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "auth-config")
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == mount["mountPath"] + "/basic_auth.ini"
    config_map = next(v for v in _pod_spec(mlflow)["volumes"] if v["name"] == "auth-config")["configMap"]["name"]
    ini = configparser.ConfigParser()
    ini.read_string(_one(base, "ConfigMap", config_map)["data"]["basic_auth.ini"])
    assert ini["mlflow"]["default_permission"] == "READ"  # signed-in users browse; anonymous: 401
    # a password check is a scrypt hash per request: cached, but a revoked password lives at most a minute
    assert 0 < int(ini["mlflow"]["auth_cache_ttl_seconds"]) <= 60
    assert "admin_password" not in ini["mlflow"] and "@" in ini["mlflow"]["database_uri"]
    assert ":" not in ini["mlflow"]["database_uri"].split("//", 1)[1].split("@")[0]  # no password in the URI
    assert "CREATE DATABASE mlflow_auth OWNER mlflow" in (K8S / "mlflow" / "postgres-init.sh").read_text()


def test_users_job_reads_every_credential_from_secrets(base):
    job = _one(base, "Job", "mlflow-users")
    c = _pod_spec(job)["containers"][0]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"]
               if "secretKeyRef" in e.get("valueFrom", {})}
    assert secrets == {"MLFLOW_TRACKING_PASSWORD": "mtl-mlflow-admin", "PIPELINE_USERNAME": "mtl-mlflow-pipeline",
                       "PIPELINE_PASSWORD": "mtl-mlflow-pipeline", "SERVING_USERNAME": "mtl-serving-mlflow",
                       "SERVING_PASSWORD": "mtl-serving-mlflow"}
    people = next(v for v in _pod_spec(job)["volumes"] if v["name"] == "people")["secret"]
    assert people["secretName"] == "mtl-mlflow-people"
    script = next(v for v in _pod_spec(job)["volumes"] if v["name"] == "script")["configMap"]["name"]
    assert "def setup(" in _one(base, "ConfigMap", script)["data"]["mlflow_users.py"]


def test_network_policies_admit_only_the_pipeline_kfp_and_the_service(base, serving):
    policies = _policies(base)
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}  # all else refused
    mlflow_pods = _pod_labels(base, "Deployment", "mlflow")
    postgres_pods = _pod_labels(base, "StatefulSet", "mtl-postgres")
    champion_pods = _pod_labels(serving, "Deployment", "mtl-champion")
    users_pods = _pod_labels(base, "Job", "mlflow-users")

    mlflow = policies["mlflow-ingress"]
    assert _selects(mlflow["podSelector"], mlflow_pods) and not _selects(mlflow["podSelector"], postgres_pods)
    (rule,) = mlflow["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    namespaces = [p["namespaceSelector"]["matchLabels"] for p in rule["from"] if "namespaceSelector" in p]
    assert namespaces == [{"kubernetes.io/metadata.name": KFP_NS}]
    pods = [p["podSelector"] for p in rule["from"] if "podSelector" in p]
    assert any(_selects(p, champion_pods) for p in pods) and any(_selects(p, users_pods) for p in pods)
    assert not any(_selects(p, postgres_pods) for p in pods)

    postgres = policies["postgres-ingress"]
    assert _selects(postgres["podSelector"], postgres_pods) and not _selects(postgres["podSelector"], mlflow_pods)
    (rule,) = postgres["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    pods = [p["podSelector"] for p in rule["from"] if "podSelector" in p]
    assert len(pods) == 1 and _selects(pods[0], mlflow_pods) and not _selects(pods[0], champion_pods)

    champion = _policies(serving)["mtl-champion-ingress"]
    assert _selects(champion["podSelector"], champion_pods)
    service = _one(serving, "Service", "mtl-champion")["spec"]
    container = _one(serving, "Deployment", "mtl-champion")["spec"]["template"]["spec"]["containers"][0]
    target = next(p["containerPort"] for p in container["ports"] if p["name"] == service["ports"][0]["targetPort"])
    assert champion["ingress"] == [{"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP",
                                                                                    "port": target}]}]


def test_serving_uses_the_slim_image_follows_the_alias_and_reads_as_a_reader(serving):
    c = _container(serving, "Deployment", "mtl-champion", "model-server")
    assert c["image"].split("/")[-1].startswith("mtl-serving:")
    env = {e["name"]: e for e in c["env"]}
    assert float(env["MTLP_FOLLOW_INTERVAL"]["value"]) > 0
    assert {env[k]["valueFrom"]["secretKeyRef"]["name"] for k in ("MLFLOW_TRACKING_USERNAME",
                                                                   "MLFLOW_TRACKING_PASSWORD")} == {"mtl-serving-mlflow"}
