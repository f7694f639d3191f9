"""Test-only fault injection (chatsdk/faults.py): off unless named, and a misspelt fault is a
settings error that names the variable, never a silently healthy or silently broken worker."""

from __future__ import annotations

import pytest
from chatsdk import faults
from chatsdk.errors import SettingsError


def test_no_fault_is_injected_unless_named() -> None:
    assert faults.parse({}) == frozenset()
    assert faults.parse({"CHATSDK_FAULTS": " "}) == frozenset()


def test_named_faults_are_parsed() -> None:
    named = faults.parse({"CHATSDK_FAULTS": "exit_on_sigterm, ack_before_commit"})
    assert named == {faults.EXIT_ON_SIGTERM, faults.ACK_BEFORE_COMMIT}


def test_an_unknown_fault_names_the_variable_and_the_known_ones() -> None:
    with pytest.raises(SettingsError, match=r"CHATSDK_FAULTS names unknown faults \['slow'\]"):
        faults.parse({"CHATSDK_FAULTS": "slow"})
