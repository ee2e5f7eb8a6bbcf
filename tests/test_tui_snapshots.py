"""Snapshot tests of the app's static screens at a fixed terminal size (pytest-textual-snapshot).

Screens that stream model output are covered by the Pilot tests in test_tui.py instead: their
text depends on timing. Update the pictures after an intended change with
``pytest tests/test_tui_snapshots.py --snapshot-update`` and look at them before committing.
"""

from __future__ import annotations

import pytest

from tui import config as cfgmod
from tui.app import LatentLocalApp

SIZE = (110, 36)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("LATENTLOCAL_MODELS", raising=False)
    cfg = cfgmod.Config()
    cfg.run.prompt = "What is 2 + 3?"
    cfgmod.save(cfg)
    return tmp_path


@pytest.mark.parametrize("keys", [["f1"], ["f3"], ["f6"]], ids=["help", "run-tab", "settings-tab"])
def test_screens(snap_compare, home, keys):
    assert snap_compare(LatentLocalApp(autoload=False), press=keys, terminal_size=SIZE)
