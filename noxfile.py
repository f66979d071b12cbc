"""Developer sessions: `nox` runs the tests (the default), `nox -s lint`, `nox -s typecheck`.

The tests session runs in the current environment (venv_backend="none"): torch is several GB, and the README's
set-up already installs the package with its test extra there. lint and typecheck get small virtualenvs of their own.
"""

import nox

nox.options.sessions = ["tests"]


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.4")
    session.run("ruff", "check", "sddkd", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "--diff", "sddkd", "tests", "noxfile.py")


@nox.session(venv_backend="none")
def typecheck(session: nox.Session) -> None:
    # mypy needs torch's stubs, which live in the installed torch: run where the package is installed.
    session.run("python", "-m", "mypy", "sddkd")
