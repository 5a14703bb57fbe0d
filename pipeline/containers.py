"""The container mode of the local runner (``mtlp run --containers``): each KFP task runs in the project image
under podman, as the cluster runs it, instead of in a process of this machine.

KFP's local runner resolves each task's inputs and hands over the command a KFP backend would run in the task's
container: the compiled component's ``command`` + ``args`` (``sh -ec <launcher> <source> --executor_input ...``).
Here that command runs in ``podman run`` of the image, locked down like the Kubernetes pods: the image's non-root
user, a read-only root file system, a private ``/tmp`` (the tasks' ``work_dir`` lives there: nothing is shared
through it), no capabilities. The pipeline root (the KFP artifacts) is mounted at the same path, as KFP's
``DockerRunner`` does; it is all the tasks share besides the MLflow server and the study database, reached over
the host's loopback network. Credentials travel as environment variables named like the cluster's Secrets' keys
(``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD``, ``OPTUNA_STORAGE``), passed by name so
that their values never appear on a command line. A container killed (exit 137, ``kill -9``) is run again, up to
``retries`` times, as the graph's ``set_retry`` does on the cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

__all__ = ["ContainerSettings", "SECRET_ENV", "TASK_WORK_DIR", "as_compiled", "check_services", "podman_command",
           "run_task"]

# the environment variables the cluster's Secrets fill (deploy/k8s, pipeline/graph.py); passed by name
SECRET_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "OPTUNA_STORAGE")
TASK_WORK_DIR = "/tmp/mtlp"  # each task's own work directory, in its container's private /tmp (the graph's default)
IMAGE_UID = 10001  # the image's user (deploy/Dockerfile)
KILLED = 137  # podman's exit status for a container killed by SIGKILL


@dataclass
class ContainerSettings:
    image: str
    retries: int = 2
    podman: str = "podman"
    runtime: Optional[str] = None  # e.g. /usr/sbin/runc where crun fails (docs: /work/shared notes, deploy/README)
    tmp_size: str = "2g"
    shm_size: str = "1g"
    threads: Optional[int] = None  # OMP/MKL threads per task (default: the image's, i.e. every core)
    env: Mapping[str, str] = field(default_factory=dict)  # extra variables, values on the command line (no secrets)
    containers_run: int = 0  # how many containers this run started, retries included


def check_services(tracking_uri: Optional[str], storage: Optional[str]) -> None:
    """Tasks in containers share no folder: MLflow must be a server and the study a database. Else a ConfigError
    naming what to set."""
    from .config import ConfigError

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        raise ConfigError(f"--containers needs an MLflow tracking server (tracking.uri or MLFLOW_TRACKING_URI "
                          f"http(s)://...), got {uri or 'none'!r}: a task's container shares no folder with the others")
    db = storage or os.environ.get("OPTUNA_STORAGE") or ""
    if "://" not in db:
        raise ConfigError(f"--containers needs a study database (search.storage or OPTUNA_STORAGE, a URL such as "
                          f"postgresql://...), got {db or 'none'!r}: a journal file in one container is lost to the others")


def container_name(run_name: str, stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"mtlp-{run_name}-{stem}")[:120]


def podman_command(settings: ContainerSettings, name: str, mounts: Sequence[Path], full_command: Sequence[str],
                   env_vars: Optional[Mapping[str, str]] = None) -> list[str]:
    """``podman run`` of ``full_command`` in the image, locked down like the cluster's pods."""
    cmd = [settings.podman]
    if settings.runtime:
        cmd += ["--runtime", settings.runtime]
    cmd += ["run", "--rm", "--name", name, "--network=host", "--read-only",
            f"--tmpfs=/tmp:rw,size={settings.tmp_size},mode=1777", f"--shm-size={settings.shm_size}",
            "--user", f"{IMAGE_UID}:{IMAGE_UID}", "--cap-drop=ALL", "--security-opt=no-new-privileges",
            "--workdir", "/tmp"]
    for path in mounts:
        cmd += ["-v", f"{path}:{path}:rw"]
    cmd += [x for var in SECRET_ENV if os.environ.get(var) for x in ("-e", var)]  # by name: value from this env
    threads = {"OMP_NUM_THREADS": str(settings.threads), "MKL_NUM_THREADS": str(settings.threads)} \
        if settings.threads else {}
    for key, value in {**threads, **dict(settings.env), **dict(env_vars or {})}.items():
        cmd += ["-e", f"{key}={value}"]
    return cmd + [settings.image, *map(str, full_command)]


def as_compiled(full_command: Sequence[str], executable: str = sys.executable) -> list[str]:
    """The command as the compiled IR has it: KFP's local runner put this machine's interpreter where the IR says
    ``python3`` (``kfp.local.subprocess_task_handler.replace_python_executable``); undo it, except in the
    component's own source, which KFP leaves alone too."""
    out, source = [], None
    for i, element in enumerate(map(str, full_command)):
        if source is None and '"$program_path/ephemeral_component.py"' in element and '"$@"' in element:
            source = i + 1
        out.append(element if i == source else element.replace(executable, "python3"))
    return out


def give_to_image_user(root: Path) -> None:
    """The image's user owns the pipeline root, as a volume's fsGroup would give it on the cluster (as root; a
    rootless podman maps the user itself)."""
    if os.geteuid() != 0 or not root.exists():
        return
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, IMAGE_UID, IMAGE_UID)


def _remove(settings: ContainerSettings, name: str) -> None:
    subprocess.run([settings.podman, "rm", "-f", "--ignore", name], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)


def run_task(settings: ContainerSettings, name: str, root: Path, full_command: Sequence[str],
             env_vars: Optional[Mapping[str, str]], log: Path, run: Callable[[list[str]], int],
             note: Callable[[str], None]) -> int:
    """Run one task's command in a container (``run`` starts a command and waits: the caller's log and console
    plumbing). A container killed by SIGKILL runs again, up to ``settings.retries`` times."""
    if shutil.which(settings.podman) is None:
        raise FileNotFoundError(f"--containers needs podman ({settings.podman!r} not found; Debian: "
                                "apt-get install -y podman runc)")
    root.mkdir(parents=True, exist_ok=True)  # KFP's local runner makes it lazily; the mount needs it now
    attempt = 0
    while True:
        give_to_image_user(root)
        _remove(settings, name)  # a container of a killed run may hold the name
        settings.containers_run += 1
        code = run(podman_command(settings, name, [root], as_compiled(full_command), env_vars))
        if code != KILLED or attempt >= settings.retries:
            return code
        attempt += 1
        with open(log, "a") as f:
            f.write(f"\n[mtlp] container {name} was killed (exit {code}); retry {attempt} of {settings.retries}\n")
        note(f"container {name} was killed (exit {code}); retry {attempt} of {settings.retries}")
