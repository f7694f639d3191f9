"""chatsdk: the bundled chat API that preflight verifies.

Nothing may rely on this file running: an editable install made before it existed still
imports chatsdk as a namespace package. Import from the modules instead.
"""

from __future__ import annotations

from chatsdk.version import __version__

__all__ = ["__version__"]
