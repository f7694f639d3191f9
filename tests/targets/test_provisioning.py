"""The database provisioning the deployments share: the replication report function is one file
(system/deploy/postgres/20-monitoring.sql) that Compose mounts and the native target runs; the
Kubernetes ConfigMap, which cannot include a file, holds an equal copy."""

from __future__ import annotations

import yaml

from preflight.targets.containers.images import REPO_ROOT
from preflight.targets.servers import APP_ROLE_SQL, MONITORING_SQL

SQL = REPO_ROOT / "system" / "deploy" / "postgres" / "20-monitoring.sql"
CONFIG = REPO_ROOT / "system" / "deploy" / "k8s" / "30-config.yaml"


def test_the_kubernetes_copy_of_the_monitoring_sql_is_the_file() -> None:
    config = next(
        doc
        for doc in yaml.safe_load_all(CONFIG.read_text())
        if doc["metadata"]["name"] == "postgres-init"
    )
    assert config["data"]["20-monitoring.sql"] == SQL.read_text()


def test_the_native_target_runs_the_same_file_in_the_application_database() -> None:
    assert SQL.read_text() == MONITORING_SQL
    assert APP_ROLE_SQL.index("\\c chatsdk") < APP_ROLE_SQL.index(MONITORING_SQL)
