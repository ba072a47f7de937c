# Python-side tests (reference model, converter).  Run from the repo root:
#   /usr/bin/python3 -m unittest discover -s tests/python -t .
import os

# The build machines are shared and small: busy-waiting OpenMP workers make a
# 2-thread torch many times slower when the cores are already busy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
