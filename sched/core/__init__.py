"""The pure core: everything `schedule(snapshot, config, now) -> Decisions` needs.

No I/O, no clock, no randomness, no state kept between calls (tests/test_layout.py walks the
imports). The shells (standalone/, slurm/, sim/) build a Snapshot and apply the Decisions.
"""
