"""A do-nothing worker entry for the benchmarks' baseline: imports nothing, so its memory is the fork server's."""

import time


def idle(spec: bytes) -> None:
    time.sleep(float(spec))


def signal_ready(spec: bytes) -> None:
    """Write one byte to the descriptor handed over as the module fd (3): the bare child's "ready"; then wait to be
    killed (its CPU time is read meanwhile)."""
    import os

    os.write(3, b"r")
    time.sleep(30)
