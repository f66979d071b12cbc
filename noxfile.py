"""Developer sessions: `nox` runs the tests, the installed-wheel check and the GPU check's CPU rehearsal (the default),
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
import time
from pathlib import Path

import nox

nox.options.sessions = ["tests", "wheel", "gpu_rehearsal"]

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


# What the GPU machine lacks (and gets from the carried wheels): hidden from the rehearsal's interpreter.
HIDDEN_PACKAGES = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection")
HIDE_MODULE = """
import importlib.machinery, sys, sysconfig

_BASE = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})
_SYSTEM = {_BASE["purelib"], _BASE["platlib"]}


class _HideSystemCopies:
    \"\"\"The packages the GPU machine lacks are found only outside this interpreter's own site-packages.\"\"\"

    @staticmethod
    def find_spec(name, path=None, target=None):
        if path is not None or name not in HIDDEN:
            return None
        entries = [p for p in sys.path if p not in _SYSTEM and p != sysconfig.get_paths()["purelib"]]
        spec = importlib.machinery.PathFinder.find_spec(name, entries)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: the GPU machine lacks it)", name=name)
        return spec


sys.meta_path.insert(0, _HideSystemCopies)
"""


@nox.session(venv_backend="none")
def gpu_rehearsal(session: nox.Session) -> None:
    """The device check as a GPU machine would run it, here with DEVICE=cpu (tiny sizes).

    It copies exactly what travels (tracked files and untracked files git does not ignore, plus the carried wheel
    folder) into an empty folder, and runs `benchmarks/device_check.sh` there with an interpreter that sees this
    environment's packages (a CPU torch) but not pydantic and its dependencies, which the GPU machine lacks: they
    come from the wheels, fetched for this Python by `benchmarks/fetch_wheels.sh` (as for 3.12 before a real call).
    It fails when a step is not ok, or when the returned folder holds more than 8 files or a file over 16 MiB.
    """
    import json
    import subprocess

    root = Path(tempfile.mkdtemp(prefix="sddkd-rehearsal-"))
    tree, out, work = root / "tree", root / "out", root / "work"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the worktree does not travel
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    travelled = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    session.log(f"rehearsal: {len(listed)} paths, {travelled / 2**20:.1f} MiB travel to {tree}")
    if travelled > 64 * 2**20:
        session.error(f"the working tree that would travel is {travelled / 2**20:.1f} MiB, over 64 MiB")
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    # The carried wheel folder, for this interpreter's Python (a real call carries the 3.12 ones).
    session.run(
        "bash",
        str(tree / "benchmarks" / "fetch_wheels.sh"),
        external=True,
        silent=True,
        env={"PY": python_version, "DEST": str(tree / "benchmarks" / "wheels"), "PYTHON": sys.executable},
    )
    hide = root / "hide"
    hide.mkdir()
    (hide / "_sddkd_hide.py").write_text(f"HIDDEN = {HIDDEN_PACKAGES!r}\n" + HIDE_MODULE)
    (hide / "sitecustomize.py").write_text("import _sddkd_hide  # noqa: F401\n")
    probe = f"import sys; sys.path.insert(0, {str(hide)!r}); import _sddkd_hide; import pydantic"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False).returncode == 0:
        session.error("hiding pydantic from the rehearsal's interpreter did not work")
    start = time.monotonic()
    env = {"DEVICE": "cpu", "PYTHON": sys.executable, "WORK": str(work), "PYTHONPATH": str(hide)}
    session.run("bash", str(tree / "benchmarks" / "device_check.sh"), str(out), env=env, external=True,
                success_codes=[0, 1])  # fmt: skip
    total = time.monotonic() - start
    summary = json.loads((out / "summary.json").read_text())
    for name, step in summary["steps"].items():
        session.log(f"  {name}: {step['state']} ({step['seconds']} s)")
    session.log(f"  device_check.sh: {total:.0f} s in all")
    session.log("  summary.json: " + json.dumps({k: summary[k] for k in ("compile_seconds", "resume", "suite")}))
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        session.log(f"  returned: {path.relative_to(out)} {path.stat().st_size} bytes")
    failed = {name: step["state"] for name, step in summary["steps"].items() if step["state"] != "ok"}
    checked = subprocess.run([sys.executable, str(tree / "benchmarks" / "device_check.py"), "check-returned",
                              str(out)], capture_output=True, text=True, check=False)  # fmt: skip
    if failed or checked.returncode != 0:  # the folders stay for reading
        session.error(f"device_check.sh (DEVICE=cpu): steps not ok {failed}; returned folder: "
                      f"{checked.stdout.strip()}; see {out} and {work}")  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


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
