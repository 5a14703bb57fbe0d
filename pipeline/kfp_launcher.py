"""Recognising KFP's launcher command for a lightweight component, so that the local runner can run the same
executor in a fork of its warm worker (``pipeline.warm_worker``) instead of a fresh interpreter."""

from __future__ import annotations

import re
from typing import Optional, Sequence

__all__ = ["LAUNCHER", "launcher_or_reason", "parse_launcher"]

LAUNCHER = "kfp.dsl.executor_main"

# KFP's launcher script for a lightweight component with nothing to install, line by line. The interpreter is
# whatever KFP put there (``python3``, or the venv's full path, which may contain any word, "pip" included):
# the script is matched as a whole, so a ``pip install`` line (or anything else) makes it someone else's.
_SCRIPT_LINES = (
    re.compile(r'program_path=\$\(mktemp -d\)'),
    re.compile(r'printf "%s" "\$0" > "\$program_path/ephemeral_component\.py"'),
    re.compile(r'(?:_KFP_RUNTIME=true\s+)?\S.*?\s+-m\s+kfp\.dsl\.executor_main\s+--component_module_path\s+'
               r'"\$program_path/ephemeral_component\.py"\s+"\$@"'),
)


def launcher_or_reason(full_command: Sequence[str]) -> tuple[Optional[tuple[str, list[str]]], str]:
    """``((component source, executor arguments), "")`` for KFP's lightweight-component command, else
    ``(None, why not)``: the reason is what a fallback to KFP's own launcher reports."""
    if len(full_command) < 4 or list(full_command[:2]) != ["sh", "-ec"]:
        installs = len(full_command) > 2 and re.search(r"-m pip install|\bpip install", str(full_command[2]))
        return None, ("the task installs packages first (pip install)" if installs else
                      f"not a KFP launcher script (command starts {' '.join(map(str, full_command[:2]))!r})")
    lines = [line.strip() for line in full_command[2].splitlines() if line.strip()]
    unknown = [line for line in lines if not any(p.fullmatch(line) for p in _SCRIPT_LINES)]
    if unknown:
        return None, f"the launcher script has a step the warm worker does not run: {unknown[0][:80]!r}"
    if len(lines) != len(_SCRIPT_LINES) or not _SCRIPT_LINES[-1].fullmatch(lines[-1]):
        return None, "the launcher script does not end by running the KFP executor"
    args = list(full_command[4:])
    if "--function_to_execute" not in args:
        return None, "the command names no --function_to_execute"
    return (full_command[3], args), ""


def parse_launcher(full_command: Sequence[str]) -> Optional[tuple[str, list[str]]]:
    """``(component source, executor arguments)`` of KFP's lightweight-component command, else ``None``.

    The command is ``sh -ec <script> <source> --executor_input ... --function_to_execute ...``, where the
    script writes the source to ``ephemeral_component.py`` and runs the executor on it; anything else (a
    ``pip install`` step, a container component) is left to KFP (:func:`launcher_or_reason` says why).
    """
    return launcher_or_reason(full_command)[0]

