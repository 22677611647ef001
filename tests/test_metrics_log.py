"""metrics.jsonl survives a crash mid-write: the torn final line is ignored on resume."""

from __future__ import annotations

import pytest

from m3cvc_jax.errors import M3CVCError
from train.metrics_log import MetricsLog


def test_torn_final_line_is_ignored_and_dropped_on_resume(tmp_path):
    log = MetricsLog(str(tmp_path))
    for step in (1, 2, 3):
        log.append(step, {"loss": 1.0 / step})
    with open(log.path, "a") as f:
        f.write('{"step": 4, "loss": 0.2')  # the process died here
    assert [r["step"] for r in log.read()] == [1, 2, 3]
    log.truncate_after(2)  # what a resume from the step-2 checkpoint does
    log.append(3, {"loss": 0.3})
    assert [(r["step"], r["loss"]) for r in log.read()] == [(1, 1.0), (2, 0.5), (3, 0.3)]
    assert open(log.path).read().endswith("}\n")


def test_a_bad_line_before_the_end_is_an_error(tmp_path):
    log = MetricsLog(str(tmp_path))
    log.append(1, {"loss": 1.0})
    with open(log.path, "a") as f:
        f.write('{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(M3CVCError, match="line 2 is not a JSON object"):
        log.read()
    with open(log.path, "w") as f:
        f.write("[1, 2]\n")
    with pytest.raises(M3CVCError, match="line 1"):
        log.read()
