"""workflow.tracking.mask_credentials: what the pipeline (or a library user) logs to MLflow carries no URL password."""

from __future__ import annotations

from workflow.tracking import mask_credentials, setup_tracking, start_parent_run


def test_url_passwords_are_masked_anywhere_in_a_config():
    config = {
        "search": {"storage": "postgresql+psycopg2://optuna:p%40ss%2Fw0rd@db:5432/optuna", "n_trials": 4},
        "tracking": {"uri": "https://alice:tok3n@mlflow.example/"},
        "notes": ["see mysql://root:hunter2@10.0.0.1/x for details", "no url here"],
        "plain": "http://mlflow:5000", "user_only": "postgresql://optuna@db/optuna", "n": 3, "none": None,
    }
    masked = mask_credentials(config)
    assert masked["search"] == {"storage": "postgresql+psycopg2://optuna:***@db:5432/optuna", "n_trials": 4}
    assert masked["tracking"]["uri"] == "https://alice:***@mlflow.example/"
    assert masked["notes"] == ["see mysql://root:***@10.0.0.1/x for details", "no url here"]
    assert masked["plain"] == "http://mlflow:5000" and masked["user_only"] == "postgresql://optuna@db/optuna"
    assert masked["n"] == 3 and masked["none"] is None
    text = repr(masked)
    assert not any(secret in text for secret in ("p%40ss", "tok3n", "hunter2"))
    assert config["search"]["storage"].endswith("p%40ss%2Fw0rd@db:5432/optuna")  # the input is left alone


def test_an_unparseable_url_still_loses_its_credentials():
    assert mask_credentials("postgresql://u:secret@[::1/db") == "postgresql://***@[::1/db"


def test_start_parent_run_masks_the_config_it_logs_even_when_called_directly(tmp_path):
    from mlflow import MlflowClient

    secret = "s3cr3t-in-config"
    trk = setup_tracking("mask", tmp_path)
    run_id = start_parent_run(trk, "p1", config={"search": {"storage": f"postgresql://optuna:{secret}@db/optuna"}})
    client = MlflowClient(trk.uri, trk.uri)
    run = client.get_run(run_id)
    logged = repr(run.data.params) + repr(run.data.tags)
    assert run.data.params["config.search.storage"] == "postgresql://optuna:***@db/optuna"
    assert secret not in logged
    local = client.download_artifacts(run_id, "config.json", str(tmp_path / "dl"))
    text = open(local).read()
    assert "optuna:***@db" in text and secret not in text
