"""Run every benchmark: ``python -m benchmarks`` (``make bench``)."""

from benchmarks import replan

replan.main([])
