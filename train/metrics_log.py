"""`metrics.jsonl`: one JSON object per logged step, appended (a resumed run continues the file)."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from m3cvc_jax.errors import M3CVCError


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep the line parseable
    return v


class MetricsLog:
    def __init__(self, workdir: str, name: str = "metrics.jsonl"):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, name)

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after `step`: a run killed past its last checkpoint redoes those steps."""
        if not os.path.exists(self.path):
            return
        keep = [r for r in self.read() if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for r in keep:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)

    def append(self, step: int, metrics: Mapping[str, Any]) -> dict:
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        return row

    def read(self) -> list[dict]:
        """The logged rows. A final line without its newline that is not valid JSON is a write cut short by a
        crash and is ignored (the resumed run redoes that step); a bad line elsewhere is an error."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            pieces = f.read().split("\n")
        rows = []
        for number, line in enumerate(pieces, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                if number == len(pieces):  # after the last newline: torn
                    break
                raise M3CVCError(f"{self.path}: line {number} is not a JSON object; fix or remove it") from None
            if not isinstance(row, dict):
                raise M3CVCError(f"{self.path}: line {number} is not a JSON object; fix or remove it")
            rows.append(row)
        return rows
