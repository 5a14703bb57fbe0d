"""The container image that the pipeline's components run in.

``default_image()`` is the default of the pipeline's image parameter. It resolves, in order:

1. ``$MTLP_IMAGE``: the full reference, e.g. ``registry.example.com/ml/mtl-pipeline:0.1.0-1a2b3c4d5e6f``;
2. ``<registry>/mtl-pipeline:<version>-<git sha>``, where the registry is ``$MTLP_IMAGE_REGISTRY``
   (default ``localhost``, what ``make image`` tags locally) and the git sha is the one the image was
   built from (baked into ``pipeline/_build_info.py`` by deploy/Dockerfile) or, in a checkout, the
   commit of ``HEAD``;
3. ``<registry>/mtl-pipeline:<version>`` where neither is known (an installed wheel outside git).

``make image`` tags the image with ``python3 pipeline/image.py --tag``, so the image that is built
and the image the compiled pipeline asks for are computed by the same code. Commit before you build:
the tag names ``HEAD``, not uncommitted edits.

Standard library only: this runs as a plain script (``python3 pipeline/image.py``) before any
dependency is installed, and inside the image.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

IMAGE_NAME = "mtl-pipeline"
DEFAULT_REGISTRY = "localhost"
SHA_LENGTH = 12
_FALLBACK_VERSION = "0.1.0"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _build_info() -> dict[str, str]:
    """What the image build wrote (absent outside the image)."""
    path = Path(__file__).with_name("_build_info.py")
    if not path.is_file():
        return {}
    # Loaded by path, not as pipeline._build_info: importing the package would import its
    # dependencies, and this module also runs as a plain script before they are installed.
    import importlib.util
    spec = importlib.util.spec_from_file_location("_mtlp_build_info", path)
    if spec is None or spec.loader is None:
        return {}
    info = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(info)
    return {k: str(getattr(info, k)) for k in ("GIT_SHA", "VERSION") if getattr(info, k, "")}


def package_version() -> str:
    info = _build_info()
    if info.get("VERSION"):
        return info["VERSION"]
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("mtl-pipeline")
    except PackageNotFoundError:
        pass
    try:  # a plain checkout that was never installed
        import tomllib
        with open(_REPO_ROOT / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (ImportError, OSError, KeyError):
        return _FALLBACK_VERSION


def git_sha(repo: Path = _REPO_ROOT) -> str | None:
    """The short commit the code comes from: baked in by the image build, else ``git rev-parse``."""
    sha = _build_info().get("GIT_SHA")
    if sha and sha != "unknown":
        return sha[:SHA_LENGTH]
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", f"--short={SHA_LENGTH}", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def image_tag() -> str:
    """``<version>-<git sha>``, or ``<version>`` where no commit is known."""
    sha = git_sha()
    return f"{package_version()}-{sha}" if sha else package_version()


def default_image() -> str:
    """The image every pipeline component runs in unless the pipeline's image parameter is set."""
    explicit = os.environ.get("MTLP_IMAGE", "").strip()
    if explicit:
        return explicit
    registry = os.environ.get("MTLP_IMAGE_REGISTRY", DEFAULT_REGISTRY).strip().rstrip("/") or DEFAULT_REGISTRY
    return f"{registry}/{IMAGE_NAME}:{image_tag()}"


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="Print the pipeline's default container image.")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tag", action="store_true", help="only the tag (<version>-<git sha>)")
    g.add_argument("--sha", action="store_true", help="only the git sha ('unknown' outside git)")
    g.add_argument("--version", action="store_true", help="only the package version")
    a = p.parse_args(argv)
    if a.tag:
        print(image_tag())
    elif a.sha:
        print(git_sha() or "unknown")
    elif a.version:
        print(package_version())
    else:
        print(default_image())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
