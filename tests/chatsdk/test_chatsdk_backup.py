"""The backup job's settings, catalogue and pruning, and the retention settings, without a
database (the drills in checks/drills run the real job against real servers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from chatsdk.backup import catalogue
from chatsdk.backup.__main__ import main as backup_main
from chatsdk.backup.job import BackupSettings, libpq_target
from chatsdk.errors import SettingsError
from chatsdk.settings import Settings

from tests.chatsdk.test_chatsdk_settings import VALID

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BACKUP_ENV = {
    "CHATSDK_BACKUP_DIR": "/var/backups/chatsdk",
    "CHATSDK_BACKUP_DATABASE_URL": "postgresql://postgres:pw@127.0.0.1:5432/chatsdk",
    "CHATSDK_UPLOAD_DIR": "/srv/uploads",
}


def entry(repo: Path, name: str, days_old: float, status: str = "ok") -> dict[str, Any]:
    (repo / name).mkdir()
    at = (NOW - timedelta(days=days_old)).isoformat()
    return {"id": name, "status": status, "started_at": at, "finished_at": at}


def test_prune_removes_backups_past_retention_and_keeps_the_rest(tmp_path: Path) -> None:
    listed = [entry(tmp_path, "old", 31), entry(tmp_path, "recent", 29), entry(tmp_path, "new", 0)]
    current: dict[str, Any] = {"format": catalogue.FORMAT, "backups": listed}
    assert catalogue.prune(tmp_path, current, NOW, 30) == ["old"]
    assert [b["id"] for b in current["backups"]] == ["recent", "new"]
    assert not (tmp_path / "old").exists()
    assert (tmp_path / "recent").exists()


def test_prune_always_keeps_the_newest_successful_backup(tmp_path: Path) -> None:
    listed = [entry(tmp_path, "last-good", 90), entry(tmp_path, "failed", 40, "failed")]
    current: dict[str, Any] = {"format": catalogue.FORMAT, "backups": listed}
    assert catalogue.prune(tmp_path, current, NOW, 30) == ["failed"]
    assert [b["id"] for b in current["backups"]] == ["last-good"]


def test_the_metric_file_carries_the_newest_success(tmp_path: Path) -> None:
    good = {"id": "a", "status": "ok", "finished_at": NOW.isoformat(), "duration_s": 2.5}
    failed = {"id": "b", "status": "failed", "finished_at": NOW.isoformat()}
    catalogue.write_metric(tmp_path, {"backups": [good, failed]}, failed)
    text = (tmp_path / catalogue.METRIC_FILE).read_text()
    assert f"chatsdk_backup_last_success_timestamp_seconds {NOW.timestamp():.3f}" in text
    assert "chatsdk_backup_last_run_success 0" in text


def test_backup_settings_default_to_twice_a_day_and_30_days() -> None:
    settings = BackupSettings.from_env(BACKUP_ENV)
    assert settings.every_s == 12 * 3600
    assert settings.retention_days == 30
    assert settings.textfile_dir is None
    assert "pw" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATSDK_BACKUP_RETENTION_DAYS", "0"),
        ("CHATSDK_BACKUP_EVERY", "-1"),
        ("CHATSDK_BACKUP_DIR", "relative/dir"),
        ("CHATSDK_BACKUP_TEXTFILE_DIR", "textfile"),
    ],
)
def test_a_bad_backup_setting_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        BackupSettings.from_env({**BACKUP_ENV, name: value})


def test_tools_get_the_password_in_the_environment_not_the_command_line() -> None:
    bare, env = libpq_target("postgresql://postgres:s%40cret@db:5432/chatsdk?sslmode=require")
    assert bare == "postgresql://postgres@db:5432/chatsdk?sslmode=require"
    assert env == {"PGPASSWORD": "s@cret"}


def test_retention_defaults_and_keep_for_ever() -> None:
    settings = Settings.from_env(VALID)
    assert (settings.retention_messages_days, settings.retention_uploads_days) == (2557, 2557)
    forever = Settings.from_env({**VALID, "CHATSDK_RETENTION_MESSAGES_DAYS": "0"})
    assert forever.retention_messages_days == 0
    with pytest.raises(SettingsError, match="CHATSDK_RETENTION_UPLOADS_DAYS"):
        Settings.from_env({**VALID, "CHATSDK_RETENTION_UPLOADS_DAYS": "-3"})


@pytest.mark.parametrize(
    ("listed", "max_age_s", "code"),
    [
        ([("recent", 0.5, "ok")], 86400, 0),
        ([("stale", 3, "ok")], 2 * 86400, 1),
        ([("broken", 0.1, "failed")], 86400, 1),
        ([], 86400, 1),
    ],
)
def test_the_health_check_wants_a_recent_successful_backup(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listed: list[tuple[str, float, str]],
    max_age_s: float,
    code: int,
) -> None:
    """`python -m chatsdk.backup check`: the backup container's health check."""
    monkeypatch.setattr(catalogue, "now", lambda: NOW)
    entries = [entry(tmp_path, name, days, status) for name, days, status in listed]
    catalogue.write(tmp_path, {"format": catalogue.FORMAT, "backups": entries})
    monkeypatch.setenv("CHATSDK_BACKUP_DIR", str(tmp_path))
    assert backup_main(["check", "--max-age", str(max_age_s)]) == code


def test_verify_names_a_missing_backup_and_fails_a_base_without_its_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m chatsdk.backup verify`: pg_verifybackup of a backup by the tools that took it
    (the BAK-VERIFY drill runs it on a real base backup)."""
    monkeypatch.setattr(catalogue, "now", lambda: NOW)
    good = {**entry(tmp_path, "b1", 0.1), "database": {"base": {"dir": "base"}}}
    (tmp_path / "b1" / "base").mkdir()
    catalogue.write(tmp_path, {"format": catalogue.FORMAT, "backups": [good]})
    monkeypatch.setenv("CHATSDK_BACKUP_DIR", str(tmp_path))
    monkeypatch.setenv("CHATSDK_BACKUP_PG_BIN", "/usr/lib/postgresql/15/bin")
    assert backup_main(["verify", "--id", "nope"]) == 2
    assert backup_main(["verify", "--id", "b1"]) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["verified"] is False
    assert "backup_manifest" in report["output"]
