"""Where this machine's PostgreSQL programs are (PG_BIN): the server a native target runs and
the client tools a probe runs on files it reads from here (pg_verifybackup, pgbench). A place on
this machine, not a target: PREFLIGHT_PG_BIN overrides the Debian default."""

from __future__ import annotations

import os
from pathlib import Path

PG_BIN = Path(os.environ.get("PREFLIGHT_PG_BIN", "/usr/lib/postgresql/15/bin"))
