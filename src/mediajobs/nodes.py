"""The node tree every XML (and JSON callback) body is rendered from.

A body is a sequence of (element name, value) pairs; a value is text, None (an empty
element) or a nested sequence. Repeated siblings are repeated pairs. It lives apart from the
API so that processors and probes can build results without importing the HTTP layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

Value = Union[str, "Nodes", None]
Nodes = Sequence[tuple[str, Value]]
