"""Every shipped preset keeps its config hash: a finished run stays finished after an upgrade.

`fixtures/preset_hashes.json` lists name -> hash as computed before the method registry existed. A change of hash
is only allowed as a deliberate correction of a preset's recipe; then update the fixture in the same commit and say
so in its message. A new preset is added to the fixture when it is added to the repo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sddkd.config import config_hash, list_presets, load_config

HASHES: dict[str, str] = json.loads((Path(__file__).parent / "fixtures" / "preset_hashes.json").read_text())


@pytest.mark.parametrize("name", sorted(HASHES))
def test_preset_keeps_its_config_hash(name: str):
    assert name in list_presets(), f"shipped preset {name} disappeared"
    assert config_hash(load_config(name)) == HASHES[name]


def test_every_shipped_preset_is_listed():
    missing = sorted(set(list_presets()) - set(HASHES))
    assert not missing, f"add these presets and their hashes to tests/fixtures/preset_hashes.json: {missing}"
