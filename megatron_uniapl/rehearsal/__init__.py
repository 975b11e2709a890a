"""Recipe rehearsal: a shipped recipe run in its own parallel layout, shrunk only where a CPU
cannot hold it (shrink.py), with models made on the fly (assets.py), checked and reported
(report.py); `tools/rehearse.py` is the command (run.py)."""
