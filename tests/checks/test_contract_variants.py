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


@pytest.mark.turns_red(
    "TST-API-CONTRACT",
    defect="the API keeps unknown JSON body fields that its OpenAPI document forbids",
)
def test_an_api_accepting_what_its_document_forbids_fails_tst_api_contract() -> None:
    with native(worker_env={"CHATSDK_FAULTS": "lenient_bodies"}) as info:
        red = failing(probe(info, "testing/test_contract.py", items={"TST-API-CONTRACT"}))
    assert "TST-API-CONTRACT" in red, red
    assert "negative_data_rejection" in red["TST-API-CONTRACT"], red
