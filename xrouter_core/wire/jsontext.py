"""JSON as the router writes it on the wire: compact (no spaces after separators) and
UTF-8 as it is (no \\u escapes), the way providers and clients write it themselves."""

from __future__ import annotations

import json
from typing import Any


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
