"""Audit records of administrative actions (apps and keys, token revocation, erasure, exports)
and of security events (a client or a credential throttled after failed authentication).

One JSON line per action on the `chatsdk.audit` logger, through the same redacting formatter as
every other line: `"event": "audit"`, the actor, the action, its subject and outcome; the line's
`ts`, `request_id` and `worker_id` say when, which request and where. Written after the action
took effect, so a record means it happened.
"""

from __future__ import annotations

import logging

log = logging.getLogger("chatsdk.audit")
# Audit records do not depend on the configured log level: a quieter level must not drop them.
log.setLevel(logging.INFO)

OPERATOR = "operator"  # whoever holds the admin key


def audit(
    action: str, actor: str, subject: str, *, outcome: str = "success", **details: str
) -> None:
    log.info(
        "audit %s %s",
        action,
        subject,
        extra={
            "fields": {
                "event": "audit",
                "action": action,
                "actor": actor,
                "subject": subject,
                "outcome": outcome,
                **details,
            }
        },
    )
