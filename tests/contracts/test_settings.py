"""Settings files and environment overrides; every error names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import main
from services.contracts.errors import ConfigError
from services.contracts.settings import apply_env, read_file, validate_section
from services.prem.config import PremSettings

GOOD = """
[prem]
node = "ha1"
role = "ha"
mobile_router = "mr1"
bids = [{ bid = 1, interface = "eth0" }, { bid = 2 }]
"""


def test_toml_and_yaml_give_the_same_settings(tmp_path: Path) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text(GOOD)
    yaml = tmp_path / "a.yaml"
    yaml.write_text(
        "prem:\n  node: ha1\n  role: ha\n  mobile_router: mr1\n"
        "  bids:\n    - {bid: 1, interface: eth0}\n    - {bid: 2}\n"
    )
    a = validate_section(PremSettings, read_file(toml), "prem")
    b = validate_section(PremSettings, read_file(yaml), "prem")
    assert a == b
    assert a.mark_of(2) == 0x00020000
    assert a.table_of(2) == 1002


def test_environment_overrides_a_nested_key(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text(GOOD)
    data = apply_env(
        read_file(path),
        {"MULTINET_PREM__BACKEND": "iptables", "MULTINET_PREM__LIMITS__MAX_POLICIES": "5"},
    )
    s = validate_section(PremSettings, data, "prem")
    assert (s.backend, s.limits.max_policies) == ("iptables", 5)


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ("bids = [{ bid = 1 }, { bid = 1 }]", "prem"),
        ("bids = [{ bid = 70000 }]", "prem.bids.0.bid"),
        ('bids = [{ bid = 1, colour = "red" }]', "prem.bids.0.colour"),
        ("bids = [{ bid = 300 }]\nmark_mask = 0xff", "prem"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, patch: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace('bids = [{ bid = 1, interface = "eth0" }, { bid = 2 }]', patch))
    with pytest.raises(ConfigError) as info:
        validate_section(PremSettings, read_file(path), "prem")
    assert any(p.field == key for p in info.value.problems), info.value.problems


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    assert main(["check-config", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('role = "ha"', 'role = "hq"'))
    assert main(["check-config", str(bad)]) == 2
    assert "prem.role" in capsys.readouterr().err
    unreadable = tmp_path / "broken.toml"
    unreadable.write_text("[prem\n")
    assert main(["check-config", str(unreadable)]) == 2


def test_shipped_examples_validate() -> None:
    examples = Path(__file__).resolve().parents[2] / "deploy" / "examples"
    assert list(examples.glob("*.toml"))
    for path in sorted(examples.glob("*.toml")):
        assert main(["check-config", str(path)]) == 0, path
