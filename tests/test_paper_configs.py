"""The paper configs resolve to docs/fidelity.md: every `section.key: value` in the table's "paper config" column
is what `python -m sensei_jax.run config --config configs/robodesk_sensei.yaml` prints, and the baselines differ
from it in the exploration behaviour alone."""

import re
from pathlib import Path

import pytest
import yaml

from sensei_jax import run

ROOT = Path(__file__).resolve().parents[1]
FIDELITY = ROOT / "docs" / "fidelity.md"
SETTING = re.compile(r"`([a-z_]+)\.([a-z_]+): ([^`]+)`")


def paper_settings() -> list[tuple[str, str, object]]:
    """(section, key, value) of every setting in the "paper config" column of docs/fidelity.md's tables."""
    settings, column = [], None
    for line in FIDELITY.read_text().splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if column is None:
            column = cells.index("paper config") if "paper config" in cells else -1
            continue
        if column < 0 or set(cells[0]) <= {"-", " "}:
            continue
        for section, key, value in SETTING.findall(cells[column]):
            settings.append((section, key, yaml.safe_load(value)))
    return settings


def resolved(config: str, capsys) -> dict:
    capsys.readouterr()
    assert run.main(["config", "--config", str(ROOT / "configs" / config)]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_the_table_names_the_paper_settings_of_every_stage():
    sections = {section for section, _, _ in paper_settings()}
    assert len(paper_settings()) >= 40
    assert {"env", "collect", "pairs", "interest", "annotate", "reward", "dreamer", "explore"} <= sections


@pytest.mark.parametrize("config", ["robodesk_sensei.yaml", "robodesk_p2x.yaml", "robodesk_motif.yaml"])
def test_the_paper_configs_hold_the_values_of_the_fidelity_table(config, capsys):
    cfg = resolved(config, capsys)
    behaviour = {"robodesk_sensei.yaml": "sensei", "robodesk_p2x.yaml": "p2x", "robodesk_motif.yaml": "motif"}[config]
    assert cfg["explore"]["behaviour"] == behaviour
    if behaviour != "sensei":  # the baselines' weights are their presets' (explore.weights null)
        assert cfg["explore"]["weights"] is None
    wrong = []
    for section, key, value in paper_settings():
        if (section, key) == ("explore", "behaviour") or ((section, key) == ("explore", "weights")
                                                          and behaviour != "sensei"):
            continue
        if key not in cfg.get(section, {}):
            wrong.append(f"{section}.{key}: no such key")
        elif cfg[section][key] != value:
            wrong.append(f"{section}.{key}: docs/fidelity.md says {value!r}, {config} resolves to "
                         f"{cfg[section][key]!r}")
    assert not wrong, "\n".join(wrong)
