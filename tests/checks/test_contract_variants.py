"""The API contract probes (checks/testing/) against deliberately broken APIs: each defect turns
its item red, and the reason names it."""

from __future__ import annotations

import pytest

from tests.checks.support import failing, native, probe


@pytest.mark.turns_red(
    "TST-WEBHOOKS", defect="webhook deliveries go out without their HMAC signature header"
)
def test_unsigned_webhook_deliveries_fail_tst_webhooks() -> None:
    with native(worker_env={"CHATSDK_FAULTS": "unsigned_webhooks"}) as info:
        red = failing(probe(info, "testing/test_webhooks.py"))
    assert "TST-WEBHOOKS" in red, red
    assert "no signature" in red["TST-WEBHOOKS"], red
