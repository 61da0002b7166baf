"""adsched: a GPU batch scheduler for AI-training clusters.

The folders say what a module may touch:

  core/        the pure core: `core.schedule.schedule(snapshot, config, now) -> Decisions` and
               everything it needs. No I/O, no clock, no state between calls.
  standalone/  the embedded shell: SQLite store, daemon, executors (local, SSH), demo.
  slurm/       the Slurm shell: config rendering, the squeue/sinfo/scontrol client.
  sim/         the trace-driven simulator (the same core under a simulated clock).
  testbed/     the Docker Slurm mini-cluster the tests and benches run on.
  errors.py, jobspec.py, configfile.py, backend.py: shared by the shells (errors, job requests,
               reading the TOML, which shell adsub talks to).
"""

__version__ = "0.1.0"
