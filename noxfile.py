"""Developer sessions: `nox` runs the tests, the installed-wheel check and the GPU check's CPU mode (the default),
`nox -s lint`, `nox -s typecheck`.

The tests session runs in the current environment (venv_backend="none"): torch is several GB, and the README's
set-up already installs the package with its test extra there. lint and typecheck get small virtualenvs of their own.
`wheel` builds the sdist and, from it, the wheel, installs the wheel into a fresh venv and runs the CLI from a folder
outside the repo, as a user meets the package (see `installed_wheel_check`).
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["tests", "wheel", "gpu_check_cpu"]

REPO = Path(__file__).resolve().parent


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session(venv_backend="none")
def wheel(session: nox.Session) -> None:
    """Build the sdist and the wheel from it, install the wheel (no editable install) into a fresh venv, and from a
    folder outside the repo run `sddkd --version`, `train --list` (every preset), `suite smoke --dry-run` and a
    2-step `train` on synthetic data.

    The fresh venv does not download torch again: a `.pth` file puts this interpreter's site-packages after the
    venv's own, as plain path entries, so the .pth files there (an editable install of this checkout among them)
    are not run. The session checks that `sddkd` is imported from the venv's site-packages.
    """
    work = Path(tempfile.mkdtemp(prefix="sddkd-wheel-"))
    try:
        dist = work / "dist"
        # No build isolation: the build runs offline, with the setuptools of this environment (the test extra).
        session.run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO), silent=True)
        (wheel_file,) = dist.glob("sddkd-*.whl")
        session.run(
            sys.executable, str(REPO / "tests" / "installed_wheel_check.py"), str(wheel_file), str(work), env=_clean()
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


@nox.session(venv_backend="none")
def gpu_check_cpu(session: nox.Session) -> None:
    """The prepared GPU check itself, in its CPU mode (tiny sizes, about 3 minutes on 2 cores): every step must
    finish and `summary.json` must say so, so the script is known to run before anyone spends GPU time on it."""
    import json

    out = Path(tempfile.mkdtemp(prefix="sddkd-gpu-check-"))
    script = str(REPO / "benchmarks" / "gpu_check.sh")
    session.run("bash", script, str(out), env={"DEVICE": "cpu", "PYTHON": sys.executable}, external=True)
    steps = json.loads((out / "summary.json").read_text())["steps"]
    failed = {name: state for name, state in steps.items() if not str(state).startswith("ok")}
    if failed:  # the logs stay for reading
        session.error(f"gpu_check.sh (DEVICE=cpu) steps failed: {failed}; logs in {out}")
    shutil.rmtree(out, ignore_errors=True)


def _clean() -> dict[str, str | None]:
    """No PYTHONPATH: the check must not see the checkout through it."""
    return {"PYTHONPATH": None} if "PYTHONPATH" in os.environ else {}


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.4")
    session.run("ruff", "check", "sddkd", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "--diff", "sddkd", "tests", "noxfile.py")


@nox.session(venv_backend="none")
def typecheck(session: nox.Session) -> None:
    # mypy needs torch's stubs, which live in the installed torch: run where the package is installed.
    session.run("python", "-m", "mypy", "sddkd")


if __name__ == "__main__":
    sys.exit("run `nox` (or `nox -s wheel`), not this file")
