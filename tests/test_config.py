"""Settings from the environment, ``.env`` and ``DOCBATCH_CONFIG``, checked as a user meets
them: ``docbatch config show|check`` as subprocesses in a folder with its own ``.env``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from docbatch.schema.config import Sources, mask, unknown_settings, valid_names


def _config(cwd: Path, *args: str, **env: str) -> Any:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCBATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "docbatch.cli", "config", *args],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _rows(done: Any) -> dict[str, dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    return {r["variable"]: r for r in json.loads(done.stdout)}


def test_dotenv_and_toml_are_read_with_the_environment_winning(tmp_path):
    (tmp_path / ".env").write_text(
        "DOCBATCH_UNIT_TOKENS=4096\n"
        'DOCBATCH_SCHEDULE_FOLDER_ROOTS=["/data/inbox"]\n'
        "DOCBATCH_MODELS__EMBED__MODEL=/models/e5\n"
        "DOCBATCH_CONFIG=docbatch.toml\n"
    )
    (tmp_path / "docbatch.toml").write_text(
        "unit_tokens = 1024\nmax_unit_attempts = 7\n"
        '[models.summarize]\nrevision = "v2"\n'
        '[openai_models]\n"gpt-4o-mini" = "generate"\n'
    )
    rows = _rows(
        _config(
            tmp_path,
            "show",
            "--format",
            "json",
            DOCBATCH_QUEUE_PREFIX="nightly",
            DOCBATCH_DATABASE_URL="postgresql+psycopg://app:hunter2@db:5432/docbatch",
            DOCBATCH_API_KEY="dbk_secret_value",
            DOCBATCH_ADMIN_KEY="admin-" + "k" * 40,
        )
    )
    assert rows["DOCBATCH_QUEUE_PREFIX"] == {
        "variable": "DOCBATCH_QUEUE_PREFIX",
        "value": "nightly",
        "source": "environment",
    }
    assert rows["DOCBATCH_UNIT_TOKENS"]["value"] == 4096  # .env beats the file
    assert rows["DOCBATCH_UNIT_TOKENS"]["source"] == ".env"
    assert rows["DOCBATCH_MAX_UNIT_ATTEMPTS"]["value"] == 7
    assert rows["DOCBATCH_MAX_UNIT_ATTEMPTS"]["source"] == "docbatch.toml"
    assert rows["DOCBATCH_SCHEDULE_FOLDER_ROOTS"]["value"] == ["/data/inbox"]
    assert rows["DOCBATCH_MODELS__EMBED__MODEL"]["value"] == "/models/e5"
    assert rows["DOCBATCH_MODELS__EMBED__MODEL"]["source"] == ".env"
    assert rows["DOCBATCH_MODELS__SUMMARIZE__REVISION"]["value"] == "v2"
    assert rows["DOCBATCH_OPENAI_MODELS"]["value"] == {"gpt-4o-mini": "generate"}
    # Other tasks keep their defaults beside the one field set.
    assert rows["DOCBATCH_MODELS__EMBED__HANDLER"]["value"].endswith("EmbedHandler")
    assert rows["DOCBATCH_BROKER_URL"]["source"] == "default"
    # Secrets masked: the key whole, the URL's password.
    assert rows["DOCBATCH_API_KEY"]["value"] == "***"
    assert rows["DOCBATCH_ADMIN_KEY"]["value"] == "***"
    url = rows["DOCBATCH_DATABASE_URL"]["value"]
    assert url == "postgresql+psycopg://app:***@db:5432/docbatch"
    changed = _config(tmp_path, "show", "--changed", DOCBATCH_QUEUE_PREFIX="nightly")
    assert changed.returncode == 0, changed.stderr
    assert "DOCBATCH_QUEUE_PREFIX" in changed.stdout and "nightly" in changed.stdout
    assert "DOCBATCH_BROKER_URL" not in changed.stdout


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("DOCBATCH_MODELS__EMBED__MODLE", "DOCBATCH_MODELS__EMBED__MODEL"),
        ("DOCBATCH_MODELS__CLASIFY__MODEL", "DOCBATCH_MODELS__CLASSIFY__MODEL"),
        ("DOCBATCH_SCHEDULE_FOLDER_ROOT", "DOCBATCH_SCHEDULE_FOLDER_ROOTS"),
        (
            "DOCBATCH_MODELS__SUMMARIZE__GENERATION__NUM_BEAM",
            "DOCBATCH_MODELS__SUMMARIZE__GENERATION__NUM_BEAMS",
        ),
    ],
)
def test_an_unknown_name_is_an_error_naming_the_closest(tmp_path, name, closest):
    done = _config(tmp_path, "check", **{name: "x"})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"unknown setting {name}; did you mean {closest}?" in done.stderr
    # Every command refuses to start on it, not only `config check`.
    shown = _config(tmp_path, "show", **{name: "x"})
    assert shown.returncode == 2 and closest in shown.stderr


def test_unknown_names_in_dotenv_json_and_toml(tmp_path):
    (tmp_path / ".env").write_text("DOCBATCH_WEBHOK_MAX_ATTEMPTS=3\n")
    (tmp_path / "c.toml").write_text("[models.embed]\ndevise = 'cpu'\n")
    done = _config(
        tmp_path,
        "check",
        DOCBATCH_CONFIG="c.toml",
        DOCBATCH_MODELS='{"tags": {"modle": "x"}}',
    )
    assert done.returncode == 2
    err = done.stderr
    assert "DOCBATCH_WEBHOK_MAX_ATTEMPTS (.env); did you mean DOCBATCH_WEBHOOK_MAX_ATTEMPTS?" in err
    assert "unknown key 'tags.modle' in DOCBATCH_MODELS" in err
    assert "DOCBATCH_MODELS__TAGS__MODEL" in err
    assert "models.embed.devise in c.toml; did you mean models.embed.device?" in err
    missing = _config(tmp_path, "check", DOCBATCH_CONFIG="nope.toml")
    assert missing.returncode == 2 and "DOCBATCH_CONFIG=nope.toml: no such file" in missing.stderr


def test_a_bad_value_names_the_variable_not_a_field(tmp_path):
    done = _config(
        tmp_path,
        "check",
        DOCBATCH_UNIT_TOKENS="lots",
        DOCBATCH_MODELS__EMBED__BATCH_TOKENS="-x",
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "validation error" not in done.stderr
    assert "DOCBATCH_UNIT_TOKENS='lots': Input should be a valid integer" in done.stderr
    assert "DOCBATCH_MODELS__EMBED__BATCH_TOKENS='-x'" in done.stderr
    ok = _config(tmp_path, "check", DOCBATCH_UNIT_TOKENS="2048")
    assert ok.returncode == 0 and "configuration ok: 1 settings set (from environment)" in ok.stderr


def test_a_check_across_settings_is_its_own_message(tmp_path):
    done = _config(tmp_path, "check", DOCBATCH_ADMIN_KEY="short")
    assert done.returncode == 2
    assert done.stderr.startswith("docbatch: DOCBATCH_ADMIN_KEY is too short"), done.stderr


@pytest.mark.fast
def test_the_lease_database_url_defaults_to_the_database_and_is_never_sqlite_beside_it(
    tmp_path,
):
    from docbatch.schema.db import lease_url
    from docbatch.schema.settings import Settings

    pooled = "postgresql+psycopg://docbatch@pgbouncer:6432/docbatch"
    direct = "postgresql+psycopg://docbatch@postgres:5432/docbatch"
    assert lease_url(Settings(database_url=pooled, lease_database_url="")) == pooled
    assert lease_url(Settings(database_url=pooled, lease_database_url=direct)) == direct
    done = _config(tmp_path, "check", DOCBATCH_LEASE_DATABASE_URL="sqlite:///leases.db")
    assert done.returncode == 2
    assert done.stderr.startswith(
        "docbatch: DOCBATCH_LEASE_DATABASE_URL must reach the same database as "
        "DOCBATCH_DATABASE_URL"
    ), done.stderr
    ok = _config(tmp_path, "check", DOCBATCH_LEASE_DATABASE_URL=direct)
    assert ok.returncode == 0, ok.stderr


def test_the_servers_refuse_to_start_on_a_typo(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "docbatch.cli", "migrate", "--wait", "1"],
        cwd=tmp_path,
        env={**os.environ, "DOCBATCH_MODELS__EMBED__REVISON": "v1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "docbatch: unknown setting DOCBATCH_MODELS__EMBED__REVISON; "
        "did you mean DOCBATCH_MODELS__EMBED__REVISION?"
    )


def test_valid_names_cover_every_field_and_non_settings_pass():
    names = valid_names()
    assert "DOCBATCH_DATABASE_URL" in names and "DOCBATCH_MODELS__ASK__DEVICE" in names
    sources = Sources(
        {"DOCBATCH_TEST_DATABASE_URL": "x", "DOCBATCH_CONFIG": "", "DOCBATCH_VERSION": "1"},
        {},
        None,
        {},
        None,
    )
    assert unknown_settings(sources) == []
    assert mask("broker_url", "redis://:pw@redis:6379/0") == "redis://:***@redis:6379/0"
    assert mask("broker_url", "redis://redis:6379/0") == "redis://redis:6379/0"


def test_the_shipped_configuration_names_only_known_settings():
    """.env.example, the Compose file and the Kubernetes manifests: a renamed or mistyped
    setting there would stop every process that reads it."""
    import re

    from docbatch.schema.config import NOT_SETTINGS, NOT_SETTINGS_PREFIXES
    from tests.fixtures import ROOT

    known = set(valid_names()) | NOT_SETTINGS
    files = [ROOT / ".env.example", ROOT / "docker-compose.yml", *(ROOT / "ops" / "k8s").glob("*")]
    unknown = {
        (path.name, name)
        for path in files
        if path.is_file()
        for name in re.findall(r"DOCBATCH_[A-Z0-9_]*[A-Z0-9]", path.read_text())
        if name not in known and not name.startswith(NOT_SETTINGS_PREFIXES)
    }
    assert not unknown, sorted(unknown)
