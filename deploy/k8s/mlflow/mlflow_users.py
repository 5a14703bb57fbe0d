"""MLflow's users and permissions for the cluster, from Secrets (run by the mlflow-users Job; idempotent).

MLflow runs its basic-auth app (``mlflow server --app-name basic-auth``, deploy/README.md "Security"). Anonymous
requests get 401 on every route but /health. With ``default_permission = READ`` (basic_auth.ini) every signed-in
user can browse; writes need a grant, which this script gives:

* the pipeline's user (``$PIPELINE_USERNAME``/``$PIPELINE_PASSWORD``): EDIT on the experiment and on the
  registered model (log runs, register versions, move ``challenger`` and, through the guarded promotion,
  ``champion``);
* people (``$PEOPLE_FILE``: one ``name:password:role`` line each, role ``promoter`` or ``reader``): promoters get
  EDIT on the registered model (``mtlp promote``, rollback), readers no grant (READ by default). A person listed
  as reader loses an EDIT grant given earlier;
* the model server's user (``$SERVING_USERNAME``/``$SERVING_PASSWORD``, optional): a reader.

Passwords of existing users are set again from the Secrets, so rotating one is: change the Secret, re-run the Job
(deploy/README.md). The admin (``$MLFLOW_TRACKING_USERNAME``/``$MLFLOW_TRACKING_PASSWORD``, the server's
``MLFLOW_AUTH_ADMIN_*``) runs this. ``$MLFLOW_MODEL_NAME`` and ``$MLFLOW_EXPERIMENT_NAME`` name what the grants are
on; both are created (by the admin) when missing, so that the grants exist before the first pipeline run.

    python mlflow_users.py        # MLFLOW_TRACKING_URI and the variables above from the environment
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Optional

ROLES = ("promoter", "reader")


class SetupError(Exception):
    """A bad people file or a missing variable: one line, naming it."""


def read_people(text: str, source: str = "people file") -> list[tuple[str, str, str]]:
    """``name:password:role`` lines (blank lines and ``#`` comments skipped) -> ``[(name, password, role)]``."""
    people = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or not all(parts):
            raise SetupError(f"{source} line {n}: expected name:password:role, got {len(parts)} field(s)")
        name, password, role = parts
        if role not in ROLES:
            raise SetupError(f"{source} line {n}: role {role!r} for {name!r} is not one of {ROLES}")
        people.append((name, password, role))
    return people


def ensure_user(auth, name: str, password: str) -> str:
    """Create ``name`` or set its password; ``'created'`` or ``'password set'``."""
    from mlflow.exceptions import MlflowException

    try:
        auth.get_user(name)
    except MlflowException:
        auth.create_user(name, password)
        return "created"
    auth.update_user_password(name, password)
    return "password set"


def setup(tracking_uri: str, model: str, experiment: str, pipeline: tuple[str, str],
          people: Iterable[tuple[str, str, str]], log=print) -> None:
    """Users, the model and the experiment, and the grants described in the module docstring."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri, tracking_uri)
    try:
        client.get_registered_model(model)
    except MlflowException:
        client.create_registered_model(model)
        log(f"registered model {model!r} created")
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)

    log(f"user {pipeline[0]!r}: {ensure_user(auth, *pipeline)}; EDIT on experiment {experiment!r} and model {model!r}")
    auth.grant_user_permission(pipeline[0], "experiment", str(exp_id), "EDIT")
    auth.grant_user_permission(pipeline[0], "registered_model", model, "EDIT")
    for name, password, role in people:
        state = ensure_user(auth, name, password)
        if role == "promoter":
            auth.grant_user_permission(name, "registered_model", model, "EDIT")
            log(f"user {name!r}: {state}; promoter: EDIT on model {model!r}")
        else:
            try:
                auth.revoke_user_permission(name, "registered_model", model)
            except MlflowException:
                pass  # had no grant: READ by default
            log(f"user {name!r}: {state}; reader: READ (the default)")


def _env(key: str) -> str:
    value = os.environ.get(key)
    if not value:
        raise SetupError(f"environment variable {key} is not set")
    return value


def main(argv: Optional[list[str]] = None) -> int:
    try:
        people_file = os.environ.get("PEOPLE_FILE")
        people = read_people(Path(people_file).read_text(), people_file) if people_file and Path(
            people_file).exists() else []
        if os.environ.get("SERVING_USERNAME"):
            people.append((os.environ["SERVING_USERNAME"], _env("SERVING_PASSWORD"), "reader"))
        setup(_env("MLFLOW_TRACKING_URI"), _env("MLFLOW_MODEL_NAME"), _env("MLFLOW_EXPERIMENT_NAME"),
              (_env("PIPELINE_USERNAME"), _env("PIPELINE_PASSWORD")), people)
    except SetupError as e:
        print(f"mlflow_users: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
