"""requirements.lock pins every dependency pyproject.toml names, within its range, and
torch at the release whose CPU build `make install` takes from the dev/CI disk."""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.fixtures import ROOT

pytestmark = pytest.mark.fast


def _locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version.split(";")[0].strip())
    return pins


def test_the_lock_pins_every_dependency_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += [r for r in extra if not r.startswith("docbatch[")]
    locked = _locked()
    wrong = []
    for raw in wanted:
        req = Requirement(raw)
        pin = locked.get(canonicalize_name(req.name))
        if pin is None or not req.specifier.contains(pin, prereleases=True):
            wrong.append(f"{raw}: locked {pin} (run `make lock`)")
    assert not wrong, "\n".join(wrong)


def test_torch_is_a_range_in_the_metadata_and_2_13_0_in_the_lock():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch,) = [
        Requirement(r) for r in project["optional-dependencies"]["all"] if r.startswith("torch")
    ]
    assert "==" not in str(torch.specifier) and torch.specifier.contains("2.13.0")
    # No +cpu tag: the lock must also install where only PyPI's build is offered.
    assert str(_locked()["torch"]) == "2.13.0"
