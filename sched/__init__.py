"""adsched: a GPU batch scheduler for AI-training clusters.

The pure core is `adsched.schedule.schedule(snapshot, config, now)`; everything else
(the SQLite store, the daemon, executors, the Slurm shell, the simulator) drives it.
"""

__version__ = "0.1.0"
