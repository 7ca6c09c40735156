"""The kernel environment's fingerprint: the interpreter a kernelspec starts, its version and distributions.

Kernelspecs are found as Jupyter finds them, without importing jupyter_client (status must stay light).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

__all__ = ["KernelEnvError", "ask_interpreter", "kernel_interpreter", "kernelspec_dirs"]

# Run in the kernel's interpreter: its version, its distributions, and the folders they were found in
# (their mtimes tell a cached fingerprint that something was installed or removed).
_PROBE = r"""
import json, os, sys
try:
    from importlib import metadata
except ImportError:
    import importlib_metadata as metadata
dists, dirs = set(), {p for p in sys.path if p and os.path.isdir(p)}
for d in metadata.distributions():
    name = (d.metadata["Name"] or "").lower().replace("_", "-")
    dists.add((name, d.version or ""))
    path = getattr(d, "_path", None)
    if path is not None:
        dirs.add(str(path.parent))
print(json.dumps({"python": sys.version, "dists": sorted(dists), "dirs": sorted(dirs)}))
"""

# Seconds an interpreter gets to list its distributions.
_PROBE_TIMEOUT = 60


class KernelEnvError(Exception):
    """The kernel environment could not be fingerprinted (the caller names the notebook)."""


def kernelspec_dirs() -> list[str]:
    """Return the folders holding kernelspecs, in Jupyter's order of precedence."""
    dirs = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    user = os.environ.get("JUPYTER_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".local", "share", "jupyter")
    env = os.path.join(sys.prefix, "share", "jupyter")
    # jupyter_core prefers the environment's own folder over the user's inside a virtual environment.
    dirs.extend([env, user] if sys.prefix != sys.base_prefix else [user, env])
    dirs.extend(["/usr/local/share/jupyter", "/usr/share/jupyter"])
    return [os.path.join(d, "kernels") for d in dirs]


def kernel_interpreter(name: str) -> str:
    """Return the absolute path of the program the kernelspec `name` starts (KernelEnvError if none)."""
    for folder in kernelspec_dirs():
        spec = os.path.join(folder, name, "kernel.json")
        try:
            with open(spec, "rb") as f:
                argv = json.loads(f.read(1 << 20)).get("argv")
        except FileNotFoundError:
            continue
        except (OSError, ValueError, AttributeError) as exc:
            raise KernelEnvError(f"kernelspec {spec} is unreadable: {exc}") from exc
        if not isinstance(argv, list) or not argv or not isinstance(argv[0], str):
            raise KernelEnvError(f"kernelspec {spec} has no argv")
        program = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0])
        if not program:
            raise KernelEnvError(f"kernelspec {name!r} starts {argv[0]!r}, which is not on the PATH")
        return os.path.abspath(program)
    if name == "python3":
        return sys.executable  # ipykernel's built-in spec: the interpreter Jupyter runs in
    raise KernelEnvError(f"kernel {name!r} is not installed")


def ask_interpreter(program: str) -> dict:
    """Run the probe in program; return {"python", "dists", "dirs"} (KernelEnvError if it cannot say)."""
    try:
        proc = subprocess.run(
            [program, "-c", _PROBE],
            cwd=os.path.sep,  # no module of the caller's folder shadows the probe's imports
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KernelEnvError(f"cannot ask {program} for its distributions: {exc}") from exc
    try:
        answer = json.loads(proc.stdout)
        if not isinstance(answer, dict) or not isinstance(answer.get("dists"), list):
            raise ValueError("not an object")
    except ValueError:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise KernelEnvError(f"{program} could not list its distributions: {tail[0]}") from None
    return answer
