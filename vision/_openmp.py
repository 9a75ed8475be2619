"""OpenMP wait policy, set before PyTorch loads its OpenMP runtime (imported first by :mod:`vision`).

PyTorch's CPU kernels run in OpenMP parallel regions; by default a thread that reaches the end of a region spins
(busy-waits) for the others. On a machine whose cores are shared with another busy process, the thread being waited
for is often descheduled while its partner spins on the shared core, and every region then costs a scheduler time
slice: measured on 2 cores beside other jobs, YOLO-n batch-1 inference at 640 px took 0.5-2.2 s with the default
policy and 0.14 s with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep instead of spinning), whose cost on an idle
machine is a thread wake-up per region (see the README's Benchmarks section for the numbers).

The policy is read once, when the OpenMP runtime loads, so this only takes effect when :mod:`vision` is imported
before ``torch`` (the command-line tools always do); an ``OMP_WAIT_POLICY`` already set (e.g. ``ACTIVE``) is kept.
"""

from __future__ import annotations

import os

#: whether this module set ``OMP_WAIT_POLICY`` (False when the environment had it): a child process that should
#: start as a user's process without vision would (e.g. a peer library's side of a benchmark) drops it
SET_HERE = "OMP_WAIT_POLICY" not in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
