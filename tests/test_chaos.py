"""The fault suite under pytest: each scenario checks every record against the simulator's ledger.

The test command runs a subset (marker ``chaos``); ``pytest -m chaos`` or ``make chaos`` runs all.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stockpipe import load_config
from stockpipe.dev import audit, chaos, faults

from .conftest import PORT_OFFSET

pytestmark = [pytest.mark.kafka, pytest.mark.s3, pytest.mark.cluster, pytest.mark.chaos]
#: Scenarios the test command runs every time; the others need `-m chaos`.
EVERY_RUN = {
    "sink-kill9-x5",
    "s3-503-slowdown",
    "s3-ambiguous-writes",
    "sink-paused-rebalance",
    "ws-half-open",
    "control-idempotence-off",
    "control-both-replicas-lost",
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[chaos.Chaos]:
    home = tmp_path_factory.mktemp("chaos")
    cfg = load_config(
        env={
            "STOCKPIPE_DEV_HOME": str(home),
            "STOCKPIPE_DEV_BROKERS": "3",
            "STOCKPIPE_DEV_KAFKA_PORT": str(24092 + PORT_OFFSET),
            "STOCKPIPE_DEV_S3_PORT": str(24000 + PORT_OFFSET),
        },
        use_default_file=False,
    )
    c = chaos.Chaos(cfg, Path(home) / "work", say=lambda _m: None)
    c.up()
    try:
        yield c
    finally:
        c.down()


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(s, id=s.name, marks=[] if s.name in EVERY_RUN else [pytest.mark.chaos_full])
        for s in faults.SCENARIOS
    ],
)
def test_scenario(suite: chaos.Chaos, scenario: faults.Scenario) -> None:
    result = chaos.run_scenario(suite, scenario, say=lambda _m: None)
    assert result.sent > 0 and result.in_s3 > 0
    assert result.faults_fired is None or result.faults_fired > 0, f"the fault did not fire: {result.note}"
    if scenario.control:
        # Broken by what the control breaks (records), not by the claims chain alone.
        assert result.lost > 0 or result.duplicated > 0, "the control run lost nothing: the checker is blind\n" + (
            audit.table([result])
        )
    else:
        assert result.gates_hold, audit.table([result]) + result.note
        assert result.acked == result.sent or scenario.name.startswith("producer-"), audit.table([result])
