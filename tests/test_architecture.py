"""The house rules of DESIGN.md, checked: platform knows no domain, domains meet only through
their services, routes never touch tables."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_every_migration_file_follows_the_naming_convention():
    import re

    for f in (ROOT / "migrations" / "versions").glob("*.py"):
        assert re.match(r"^\d{4}-\d{2}-\d{2}_[a-z0-9]+_[a-z0-9_]+\.py$", f.name), f.name


def test_lock_files_pin_hashes_and_record_no_download_address():
    import json

    for name in ("requirements.txt", "requirements-dev.txt", "requirements-bootstrap.txt"):
        text = (ROOT / name).read_text()
        pins = [line for line in text.splitlines() if "==" in line and not line.lstrip().startswith("#")]
        assert pins, name
        assert "--hash=sha256:" in text
        assert "://" not in "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    lock = json.loads((ROOT / "package-lock.json").read_text())
    for pkg in lock.get("packages", {}).values():
        assert "resolved" not in pkg and pkg.get("integrity", "sha512-").startswith("sha512-")
    assert not (ROOT / "uv.lock").exists()
