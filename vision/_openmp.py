"""OpenMP wait settings, made before PyTorch loads its OpenMP runtime (imported first by :mod:`vision`).

PyTorch's CPU kernels run in OpenMP parallel regions. By default (libgomp, PyTorch's runtime on Linux) a thread that
reaches the end of a region spins for about 3 ms (``GOMP_SPINCOUNT`` 300000) before it sleeps. On a machine whose
cores are shared with another busy process, the thread being waited for is often descheduled while its partner spins
on the shared core, and every region then costs a scheduler time slice: measured on 2 cores beside other jobs, YOLO-n
batch-1 inference at 640 px took 0.5-2.2 s with the default and 0.14 s with ``OMP_WAIT_POLICY=PASSIVE`` (no spinning
at all). Never spinning costs an idle machine a thread wake-up per region instead: a call that comes after a pause
(a request, not a benchmark loop) found the other core asleep and took 89-93 ms against 58-60 ms.

So vision sets ``OMP_WAIT_POLICY=PASSIVE`` (for every OpenMP runtime) with ``GOMP_SPINCOUNT=3000`` (libgomp: spin
about 30 us, long enough to bridge the gap between two kernels of one call, far shorter than a time slice).
Measured with ``benchmarks/yolo.py``'s own-process sides (YOLO-n, batch 1, 640 px, 2 threads, each call after a
0.4 s pause): idle 60.0 ms (PASSIVE alone 90.5, 3 ms spinning 59.1); beside a busy process 105.4 ms where the thread
count is fitted to the free cores (:func:`vision.utils.parallel.fitted_threads`) and 145.5 ms where it is not
(PASSIVE alone 108.5, 3 ms spinning 210.8).

The settings are read once, when the OpenMP runtime loads, so they only take effect when :mod:`vision` is imported
before ``torch`` (the command-line tools always do). A user's own ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` leaves
both as the user has them.
"""

from __future__ import annotations

import os

#: what vision sets when the environment has neither variable
SETTINGS = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "3000"}
#: whether this module set :data:`SETTINGS`: a child process that should start as a user's process without vision
#: would (e.g. a peer library's side of a benchmark) drops them
SET_HERE = not any(key in os.environ for key in SETTINGS)
if SET_HERE:
    os.environ.update(SETTINGS)
