"""slurm_query: a requeued job's attempts from the one batched `sacct -D` call."""

from __future__ import annotations

import subprocess
from typing import Sequence

from camvis.bookkeeping import slurm_query

# `sacct -X -D -j 44,59,61,70,123 -P -n -o JobID,State,NodeList,Elapsed,ExitCode` as the local 2-node
# cluster writes it: one row per attempt, oldest first (44: n2 killed, requeued, waiting for n2;
# 59: `scontrol requeue`d, then completed; 61: two node deaths then a preemption, running again;
# 70: run once; 123: an array whose task 5 was split off its pending range while sacct still lists it).
SACCT_D = """\
44|NODE_FAIL|n[1-2]|00:00:15|0:0
44|PENDING|None assigned|00:00:00|0:0
59|REQUEUED|n[1-2]|00:00:15|0:0
59|COMPLETED|n[1-2]|00:00:24|0:0
61|NODE_FAIL|n[1-2]|00:00:13|0:0
61|NODE_FAIL|n[1-2]|00:00:26|0:0
61|REQUEUED|n1|00:01:16|0:0
61|RUNNING|n1|00:00:11|0:0
70|CANCELLED by 0|n1|00:00:17|0:15
123_4|NODE_FAIL|n2|00:00:14|0:0
123_4|RUNNING|n1|00:00:03|0:0
123_[5-7%2]|PENDING|None assigned|00:00:00|0:0
123_5|RUNNING|n2|00:00:01|0:0
"""


def test_the_last_row_of_an_id_is_its_state_the_earlier_ones_its_history() -> None:
    rows = slurm_query.parse_sacct(SACCT_D)
    current = {k: (r.state, r.history) for k, r in rows.items()}
    assert current == {
        "44": ("PENDING", ("NODE_FAIL",)),
        "59": ("COMPLETED", ("REQUEUED",)),
        "61": ("RUNNING", ("NODE_FAIL", "NODE_FAIL", "REQUEUED")),
        "70": ("CANCELLED", ()),
        "123_4": ("RUNNING", ("NODE_FAIL",)),
        "123_5": ("RUNNING", ()),  # the pending range it came from never ran: no attempt
        "123_6": ("PENDING", ()),
        "123_7": ("PENDING", ()),
    }
    assert (rows["44"].node, rows["61"].node, rows["61"].elapsed) == ("", "n1", "00:00:11")  # the current attempt's


def test_query_asks_for_every_attempt_in_the_one_sacct_call() -> None:
    calls: list[list[str]] = []

    def sacct(cmd: Sequence[str]) -> subprocess.CompletedProcess:
        calls.append(list(cmd))
        return subprocess.CompletedProcess(list(cmd), 0, SACCT_D, "")

    result = slurm_query.query(["44", "59", "61", "70", "123_4", "123_5"], sacct)
    assert calls == [["sacct", "-D", "-j", "44,59,61,70,123", "-P", "-n", "-o", slurm_query.SACCT_FIELDS]]
    assert result.source == "sacct" and result.rows["44"].history == ("NODE_FAIL",)


def test_squeue_knows_no_history() -> None:
    """Accounting off: squeue shows the current attempt only; nothing is made up."""

    def no_accounting(cmd: Sequence[str]) -> subprocess.CompletedProcess:
        if cmd[0] == "sacct":
            return subprocess.CompletedProcess(list(cmd), 1, "", "sacct: error: Slurm accounting storage is disabled\n")
        return subprocess.CompletedProcess(list(cmd), 0, "44|PENDING||0:00\n61|RUNNING|n1|0:11\n", "")

    result = slurm_query.query(["44", "61"], no_accounting)
    assert result.source == "squeue" and {k: r.history for k, r in result.rows.items()} == {"44": (), "61": ()}
