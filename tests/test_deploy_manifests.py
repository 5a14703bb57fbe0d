"""deploy/k8s: the kustomize manifests.

The manifests are rendered with ``kubectl kustomize`` (``_deploy_helpers``; skipped, with the reason, where kubectl
is missing) and every rendered object is validated offline against the Kubernetes OpenAPI schemas of a
pinned version (kubernetes-validate, strict: unknown fields are errors). The rest asserts what makes
them safe to apply: non-root pods without privilege escalation, read-only root filesystems, resource
requests and limits, probes, passwords only through Secret references, MLflow's --allowed-hosts, a
namespaced least-privilege Role. The Dockerfile and the image reference: ``test_deploy_image.py``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from _deploy_helpers import (DEPLOY, K8S_VERSION, KFP_NS, MLFLOW_NS, SECRET_NAMES, SECRETISH, WORKLOAD_KINDS,
                             _by_prefix, _container, _containers, _env, _one, _pod_spec, _strings, _workloads,
                             any_rendered, base, s3, serving)

__all__ = ["any_rendered", "base", "s3", "serving"]  # module fixtures, imported for pytest to find


# ---- schema ------------------------------------------------------------------------------------

def test_every_manifest_validates_against_the_pinned_kubernetes_schemas(any_rendered):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in any_rendered:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:  # pragma: no cover - the message is the point
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {K8S_VERSION}: {e}")


def test_expected_objects_in_their_namespaces(base):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in base}
    for expected in [("Namespace", MLFLOW_NS), ("StatefulSet", "mtl-postgres"), ("Service", "mtl-postgres"),
                     ("Deployment", "mlflow"), ("Service", "mlflow"), ("PersistentVolumeClaim", "mlflow-artifacts"),
                     ("ServiceAccount", "mtl-pipeline-runner"), ("Role", "mtl-pipeline-runner"),
                     ("RoleBinding", "mtl-pipeline-runner"), ("ConfigMap", "mtl-pipeline-env")]:
        assert expected in kinds, f"{expected} missing from deploy/k8s"
    for d in base:
        if d["kind"] == "Namespace":
            continue
        want = KFP_NS if d["kind"] in {"ServiceAccount", "Role", "RoleBinding"} or d["metadata"]["name"] == "mtl-pipeline-env" else MLFLOW_NS
        assert d["metadata"].get("namespace") == want, f"{d['kind']}/{d['metadata']['name']} not in {want}"


def test_namespace_enforces_the_restricted_pod_security_standard(base):
    labels = _one(base, "Namespace", MLFLOW_NS)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# ---- pod and container security -----------------------------------------------------------------

def test_every_pod_runs_as_non_root_with_runtime_default_seccomp(any_rendered):
    for doc in _workloads(any_rendered):
        pod = _pod_spec(doc)
        ctx = pod.get("securityContext", {})
        assert ctx.get("runAsNonRoot") is True, f"{doc['metadata']['name']}: pod runAsNonRoot"
        assert ctx.get("runAsUser", 1) != 0
        assert ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert pod.get("automountServiceAccountToken") is False, \
            f"{doc['metadata']['name']}: these pods never call the Kubernetes API"
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_every_container_is_locked_down(any_rendered):
    for doc in _workloads(any_rendered):
        for c in _containers(doc):
            where = f"{doc['metadata']['name']}/{c['name']}"
            ctx = c.get("securityContext", {})
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("privileged", False) is False, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("runAsNonRoot", _pod_spec(doc)["securityContext"].get("runAsNonRoot")) is True, where
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not ctx.get("capabilities", {}).get("add"), where


def test_read_only_root_filesystems_get_a_writable_tmp(any_rendered):
    for doc in _workloads(any_rendered):
        volumes = {v["name"]: v for v in _pod_spec(doc).get("volumes", [])}
        for c in _containers(doc):
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], \
                f"{doc['metadata']['name']}/{c['name']}: no emptyDir at /tmp"


def test_every_container_has_cpu_and_memory_requests_and_limits(any_rendered):
    for doc in _workloads(any_rendered):
        for c in _containers(doc):
            res = c.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in res.get(section, {}), f"{doc['metadata']['name']}/{c['name']}: {section}.{resource}"


def test_images_are_pinned(any_rendered):
    for doc in _workloads(any_rendered):
        for c in _containers(doc):
            image = c["image"]
            name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
            assert tag and tag != "latest" or "@sha256:" in image, f"{image} is not pinned"


# ---- probes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,name,container", [("Deployment", "mlflow", "mlflow"),
                                                 ("StatefulSet", "mtl-postgres", "postgres")])
def test_mlflow_and_postgres_have_readiness_and_liveness_probes(base, kind, name, container):
    c = _container(base, kind, name, container)
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert probe in c, f"{name}: {probe}"
    if name == "mlflow":
        # /health is exempt from MLflow's host check, so kubelet probes (Host: <pod IP>) are not refused.
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    else:
        assert c["readinessProbe"]["exec"]["command"][0] == "pg_isready"


def test_model_server_has_probes(serving):
    c = _container(serving, "Deployment", "mtl-champion", "model-server")
    assert c["readinessProbe"]["httpGet"]["path"] == "/ping" and "livenessProbe" in c


def test_model_server_caps_the_request_body(serving):
    """The pod runs our server (MLflow's scoring app behind the 413 cap), not bare `mlflow models serve`."""
    from workflow.serving import model_server

    c = _container(serving, "Deployment", "mtl-champion", "model-server")
    assert c["command"] == ["python", "-m", "workflow.serving.model_server"]
    args = dict(a.split("=", 1) for a in c["args"])
    assert args["--model-uri"] == "$(MODEL_URI)" and args["--port"] == "8080"
    cap = int(_env(c)[model_server.MAX_BYTES_ENV]["value"])
    assert 0 < cap == model_server.DEFAULT_MAX_REQUEST_BYTES
    parser_options = {o for a in model_server._parser()._actions for o in a.option_strings}
    assert set(args) <= parser_options  # every flag the manifest passes exists


# ---- secrets -----------------------------------------------------------------------------------

def test_no_secret_objects_or_plaintext_passwords_in_the_manifests(any_rendered):
    assert not [d for d in any_rendered if d["kind"] == "Secret"], "Secrets are created by deploy/create-secrets.sh"
    for doc in any_rendered:
        for s in _strings(doc):
            for url in re.findall(r"[a-z0-9+]+://\S+", s):
                assert urlsplit(url).password is None, f"credentials in a URL in {doc['metadata']['name']}: {url}"
        for wl in [doc] if doc["kind"] in WORKLOAD_KINDS else []:
            for c in _containers(wl):
                for e in c.get("env", []):
                    if SECRETISH.search(e["name"]):
                        assert "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), \
                            f"{wl['metadata']['name']}/{c['name']}: {e['name']} must come from a Secret"


def test_secret_references(any_rendered):
    create_secrets = (DEPLOY / "create-secrets.sh").read_text()
    for doc in _workloads(any_rendered):
        for c in _containers(doc):
            refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
            refs += [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
            for name in refs:
                assert name in SECRET_NAMES, name
                assert name in create_secrets, f"deploy/create-secrets.sh does not create {name}"


def test_postgres_and_mlflow_passwords_come_from_their_secrets(base):
    pg = _env(_container(base, "StatefulSet", "mtl-postgres", "postgres"))
    assert pg["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mtl-postgres-admin", "key": "password"}
    assert pg["MLFLOW_DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mtl-mlflow-db"
    assert pg["OPTUNA_DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mtl-optuna-db"
    mlflow = _env(_container(base, "Deployment", "mlflow", "mlflow"))
    # libpq reads PGPASSWORD, so the backend-store URI carries no password.
    assert mlflow["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mtl-mlflow-db", "key": "password"}


# ---- MLflow ------------------------------------------------------------------------------------

def _mlflow_args(docs) -> dict[str, str]:
    c = _container(docs, "Deployment", "mlflow", "mlflow")
    assert c["command"][:2] == ["mlflow", "server"]
    return dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in c["args"])


def test_mlflow_backend_store_is_the_postgres_service(base):
    args = _mlflow_args(base)
    url = urlsplit(args["backend-store-uri"])
    # The driver named: SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which the image lacks.
    assert url.scheme == "postgresql+psycopg2" and url.password is None
    assert url.hostname == _one(base, "Service", "mtl-postgres")["metadata"]["name"]
    assert url.path == "/mlflow" and url.username == "mlflow"


def test_mlflow_allowed_hosts_cover_its_service_names(base, serving):
    args = _mlflow_args(base)
    hosts = args["allowed-hosts"].split(",")
    assert "*" not in hosts
    svc = _one(base, "Service", "mlflow")
    name, port = svc["metadata"]["name"], svc["spec"]["ports"][0]["port"]
    fqdn = f"{name}.{MLFLOW_NS}.svc.cluster.local"
    for host in (name, f"{name}:{port}", fqdn, f"{fqdn}:{port}"):
        assert host in hosts, f"--allowed-hosts lacks {host}: pods using it would get 403"
    # The tracking URI pipeline pods and the model server use must be one the server accepts.
    env_cm = _one(base, "ConfigMap", "mtl-pipeline-env")["data"]
    serving_env = _env(_container(serving, "Deployment", "mtl-champion", "model-server"))
    for uri in (env_cm["MLFLOW_TRACKING_URI"], serving_env["MLFLOW_TRACKING_URI"]["value"]):
        assert urlsplit(uri).netloc in hosts, uri


def test_mlflow_proxies_artifacts_to_the_pvc_by_default(base):
    args = _mlflow_args(base)
    assert "serve-artifacts" in args
    assert args["artifacts-destination"] == "$(MLFLOW_ARTIFACTS_DESTINATION)"
    dest = _by_prefix(base, "ConfigMap", "mlflow-config")["data"]["artifacts-destination"]
    deploy = _one(base, "Deployment", "mlflow")
    c = _container(base, "Deployment", "mlflow", "mlflow")
    mount = next(m for m in c["volumeMounts"] if dest.startswith(m["mountPath"]))
    volume = next(v for v in _pod_spec(deploy)["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == "mlflow-artifacts"
    assert deploy["spec"]["strategy"]["type"] == "Recreate"  # a ReadWriteOnce volume


def test_s3_overlay_points_artifacts_at_a_bucket_with_keys_from_a_secret(s3):
    data = _by_prefix(s3, "ConfigMap", "mlflow-config")["data"]
    assert data["artifacts-destination"].startswith("s3://")
    c = _container(s3, "Deployment", "mlflow", "mlflow")
    assert {"secretRef": {"name": "mtl-mlflow-s3", "optional": True}} in c["envFrom"]
    assert _env(c)["MLFLOW_S3_ENDPOINT_URL"]["valueFrom"]["configMapKeyRef"]["key"] == "s3-endpoint-url"


# ---- PostgreSQL ----------------------------------------------------------------------------------

def test_postgres_keeps_its_data_on_a_pvc(base):
    sts = _one(base, "StatefulSet", "mtl-postgres")
    claims = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
    c = _container(base, "StatefulSet", "mtl-postgres", "postgres")
    data_mount = next(m for m in c["volumeMounts"] if m["name"] in claims)
    assert _env(c)["PGDATA"]["value"].startswith(data_mount["mountPath"] + "/")  # a subfolder: lost+found
    assert sts["spec"]["serviceName"] == "mtl-postgres"


def test_postgres_init_creates_the_mlflow_and_optuna_databases(base):
    sts = _one(base, "StatefulSet", "mtl-postgres")
    init = next(v for v in _pod_spec(sts)["volumes"] if v["name"] == "init")
    assert init["configMap"]["defaultMode"] == 0o555
    script = _by_prefix(base, "ConfigMap", "postgres-init")["data"]["postgres-init.sh"]
    for db in ("mlflow", "optuna"):
        assert f"CREATE DATABASE {db} OWNER {db}" in script
    assert "\\getenv" in script  # passwords from the environment, not the command line
    # The pipeline's Optuna storage URL (Secret optuna-db, made by create-secrets.sh) names this database.
    create_secrets = (DEPLOY / "create-secrets.sh").read_text()
    # postgresql+psycopg2: SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which is not installed.
    m = re.search(r"OPTUNA_STORAGE=(postgresql\+psycopg2://\S+?)\"", create_secrets)
    assert m, "create-secrets.sh writes OPTUNA_STORAGE"
    optuna = urlsplit(m.group(1).replace("${optuna_pw}", "pw").replace("${NS}", MLFLOW_NS))
    assert optuna.hostname == f"mtl-postgres.{MLFLOW_NS}.svc.cluster.local" and optuna.path == "/optuna"
    assert optuna.username == "optuna" and optuna.port == 5432


# ---- RBAC ----------------------------------------------------------------------------------------

def test_pipeline_service_account_has_a_minimal_namespaced_role(base):
    assert not [d for d in base if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    role = _one(base, "Role", "mtl-pipeline-runner")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert set(rule["verbs"]) <= {"get", "create", "patch"}, rule
        assert not {"pods/exec", "pods/attach", "roles", "rolebindings", "serviceaccounts/token"} & set(rule["resources"])
        if "secrets" in rule["resources"] or "configmaps" in rule["resources"]:
            assert rule.get("resourceNames"), f"{rule['resources']} must be limited by name"
            assert rule["verbs"] == ["get"]
    binding = _one(base, "RoleBinding", "mtl-pipeline-runner")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mtl-pipeline-runner"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mtl-pipeline-runner", "namespace": KFP_NS}]


def test_cluster_pipeline_config_matches_the_manifests(base, serving):
    config_mod = pytest.importorskip("pipeline.config")
    config = config_mod.load_config(DEPLOY / "cluster-config.yaml")
    assert config.tracking.uri == _one(base, "ConfigMap", "mtl-pipeline-env")["data"]["MLFLOW_TRACKING_URI"]
    model_uri = _by_prefix(serving, "ConfigMap", "mtl-serving-config")["data"]["model-uri"]
    assert model_uri == f"models:/{config.registered_model}@champion"
    assert config.secrets.database == "optuna-db" and "optuna-db" in (DEPLOY / "create-secrets.sh").read_text()
