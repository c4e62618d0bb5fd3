"""A do-nothing worker entry for the benchmarks' baseline: imports nothing, so its memory is the fork server's."""

import time


def idle(spec: bytes) -> None:
    time.sleep(float(spec))
