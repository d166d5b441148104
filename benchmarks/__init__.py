"""Benchmarks (slow; never part of the test suite). ``python -m benchmarks [name]`` or ``make bench``.
Each benchmark module has ``main(argv)`` and writes its figures into BENCHMARKS.md via
``benchmarks.report.update_section`` together with the machine, the command and the date."""
