"""The GPU suite's parts, target judgement and report (see ``benchmarks/gpu_suite.py``)."""
