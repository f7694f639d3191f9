"""The database provisioning the deployments share: the replication report function is one file
(system/deploy/postgres/20-monitoring.sql) that Compose mounts and the native target runs, and
the synchronous replication guard is one script (system/deploy/images/postgres/sync-guard.sh)
that the postgres image and the native target run; the Kubernetes ConfigMaps, which cannot
include a file, hold equal copies."""

from __future__ import annotations

from typing import Any

import yaml

from preflight.targets.containers.images import REPO_ROOT
from preflight.targets.native.standby import SYNC_GUARD as NATIVE_GUARD
from preflight.targets.servers import APP_ROLE_SQL, MONITORING_SQL

SQL = REPO_ROOT / "system" / "deploy" / "postgres" / "20-monitoring.sql"
GUARD = REPO_ROOT / "system" / "deploy" / "images" / "postgres" / "sync-guard.sh"
CONFIG = REPO_ROOT / "system" / "deploy" / "k8s" / "30-config.yaml"


def _config_map(name: str) -> dict[str, Any]:
    return next(
        doc for doc in yaml.safe_load_all(CONFIG.read_text()) if doc["metadata"]["name"] == name
    )


def test_the_kubernetes_copy_of_the_monitoring_sql_is_the_file() -> None:
    assert _config_map("postgres-init")["data"]["20-monitoring.sql"] == SQL.read_text()


def test_the_kubernetes_copy_of_the_sync_guard_is_the_file() -> None:
    assert _config_map("postgres-sync-guard")["data"]["sync-guard.sh"] == GUARD.read_text()
    assert NATIVE_GUARD == GUARD


def test_the_native_target_runs_the_same_file_in_the_application_database() -> None:
    assert SQL.read_text() == MONITORING_SQL
    assert APP_ROLE_SQL.index("\\c chatsdk") < APP_ROLE_SQL.index(MONITORING_SQL)
