"""The same pipeline-run checks against a real ``mlflow server``: PostgreSQL backend store (started by the test
fixture on loopback, stopped after) and artifacts proxied by the server (``mlflow-artifacts:/``)."""

from __future__ import annotations

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("psycopg2")

from _mlflow_helpers import (check_champion_parity, check_layout, check_promotion_rules, quiet_mlflow,  # noqa: E402
                             raw_test_rows, run_pipeline)
from _servers import background, free_port, mlflow_bin, wait_http  # noqa: E402

from workflow import serving# noqa: E402
from workflow import tracking# noqa: E402

quiet_mlflow()


@pytest.mark.postgres
@pytest.mark.slow
def test_pipeline_run_against_mlflow_server_on_postgres(postgres, adult_dir, tmp_path):
    import mlflow

    db_uri = postgres.create_database("mlflow_e2e")
    port = free_port()
    artifacts = tmp_path / "proxied-artifacts"
    cmd = mlflow_bin() + ["server", "--backend-store-uri", db_uri, "--serve-artifacts",
                          "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port),
                          "--workers", "1", "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"]
    url = f"http://127.0.0.1:{port}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        with background(cmd, tmp_path / "server.log", env=serving.serve_environment()) as proc:
            wait_http(url + "/health", proc, 240, tmp_path / "server.log")
            trk = tracking.setup_tracking("adult-mtl-server", uri=url, work_dir=tmp_path / "work")
            run = run_pipeline(trk, adult_dir, tmp_path / "work", raw_test_rows(adult_dir, nrows=5),
                               pipeline_run_id="pr-pg-1")
            # the runs live in PostgreSQL, the artifacts went through the server into its destination folder
            assert trk.client.get_run(run.parent_run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
            assert any(artifacts.rglob("model.onnx")) and any(artifacts.rglob("MLmodel"))
            import psycopg2

            conn = psycopg2.connect(host="127.0.0.1", port=postgres.port, user=postgres.user,
                                    password=postgres.password, dbname="mlflow_e2e")
            with conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(trk.experiment_id),))
                assert cur.fetchone()[0] == 3  # parent + two children
                cur.execute("SELECT count(*) FROM model_versions WHERE name = 'adult-mtl'")
                assert cur.fetchone()[0] == 2
            conn.close()
            check_layout(run)
            check_champion_parity(run, adult_dir)
            check_promotion_rules(run)
        assert proc.returncode is not None  # the server was stopped
        with pytest.raises(tracking.TrackingUnavailable):
            tracking.check_tracking_reachable(url, timeout=2)
    finally:
        tracking.use_globally(previous[0])
