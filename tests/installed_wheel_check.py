"""Check an sddkd wheel as users get it: `python tests/installed_wheel_check.py WHEEL WORKDIR` (run by `nox -s wheel`).

Installs WHEEL into a fresh venv under WORKDIR (no editable install) and, from a folder outside the repository,
runs `sddkd --version`, `sddkd train --list` (every preset of the repo must be listed), `sddkd suite smoke
--dry-run` and a 2-step `sddkd train` on synthetic data. Exits non-zero with one line per failed check.

The venv reuses this interpreter's packages (torch is several GB) through a `.pth` file of plain paths placed
after the venv's own site-packages: plain path lines do not run the .pth files found there, so an editable
install of the checkout stays invisible. The first check proves `sddkd` is imported from the venv's own copy.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
failures: list[str] = []


def check(condition: bool, message: str) -> None:
    print(("ok   " if condition else "FAIL ") + message, flush=True)
    if not condition:
        failures.append(message)


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def make_venv(root: Path) -> Path:
    """A fresh venv that sees this interpreter's site-packages last, as plain sys.path entries."""
    venv.EnvBuilder(with_pip=False, clear=True).create(root)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    parents = [
        p for p in dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]]) if Path(p).is_dir()
    ]
    (Path(purelib) / "zz_parent_site_packages.pth").write_text("".join(f"{p}\n" for p in parents))
    return python


def main(wheel: Path, work: Path) -> int:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["SDDKD_HOME"] = str(work / "sddkd_home")  # never touch the user's teacher store
    python = make_venv(work / "venv")
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    # The dependencies must already be satisfied by what the venv sees: --no-index makes a missing or too-old
    # one an error instead of a download. --force-reinstall: an (editable) sddkd of the outer environment is
    # visible through the .pth and must not count as "already installed".
    install = run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--force-reinstall",
         "--no-deps", str(wheel)], work, env,
    )  # fmt: skip
    check(install.returncode == 0, f"pip install {wheel.name}: {install.stderr.strip()[-300:]}")
    if install.returncode:
        return 1
    deps = run([sys.executable, "-m", "pip", "--python", str(python), "check"], work, env)
    check(deps.returncode == 0 or "sddkd" not in deps.stdout, f"declared dependencies satisfied: {deps.stdout.strip()}")

    outside = work / "elsewhere"  # not the repo: nothing is importable from the current folder
    outside.mkdir()
    sddkd_cli = str(python.parent / "sddkd")
    where = run([str(python), "-c", "import sddkd, sys; print(sddkd.__file__); print(sys.prefix)"], outside, env)
    lines = where.stdout.split()
    installed = len(lines) == 2 and Path(lines[0]).resolve().is_relative_to(Path(lines[1]).resolve())
    check(installed, f"sddkd imported from the venv's own copy: {where.stdout.strip()} {where.stderr.strip()[-200:]}")
    check(REPO not in Path(lines[0] if lines else REPO).resolve().parents, "sddkd is not imported from the checkout")

    version = wheel.name.split("-")[1]
    shown = run([sddkd_cli, "--version"], outside, env)
    check(shown.returncode == 0 and shown.stdout.strip() == f"sddkd {version}", f"sddkd --version: {shown.stdout!r}")

    listed = run([sddkd_cli, "train", "--list"], outside, env)
    expected = sorted(
        p.relative_to(REPO / "presets").with_suffix("").as_posix() for p in (REPO / "presets").rglob("*.yaml")
    )
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]  # NAME  description
    shown_all = (
        f"sddkd train --list shows all {len(expected)} presets (got {len(names)}; {listed.stderr.strip()[-200:]})"
    )
    check(listed.returncode == 0 and names == expected, shown_all)

    dry = run([sddkd_cli, "suite", "smoke", "--dry-run", "--format", "json"], outside, env)
    check(
        dry.returncode == 0 and "res20_res8" in dry.stdout, f"sddkd suite smoke --dry-run: {dry.stderr.strip()[-300:]}"
    )

    out = work / "runs"
    train = run(
        [sddkd_cli, "train", "-p", "synthetic/vanilla/resnet8", "--max-steps", "2", "--device", "cpu",
         "--out", str(out), "--set", "engine.progress=false"], outside, env,
    )  # fmt: skip
    results = list(out.glob("*/result.json"))
    record = json.loads(results[0].read_text()) if len(results) == 1 else {}
    check(
        train.returncode == 0
        and record.get("status") == "finished"
        and record.get("versions", {}).get("sddkd") == version,
        f"2-step sddkd train finished and records version {version}: {train.stderr.strip()[-400:]}",
    )
    print(f"{len(failures)} check(s) failed" if failures else "the installed wheel works", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/installed_wheel_check.py WHEEL WORKDIR")
    sys.exit(main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
