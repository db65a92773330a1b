"""pt-engine: exact per-port packet and byte counters from libpcap, streamed as msgpack."""
import os

__version__ = "0.1.0"

# pt-engine does no linear algebra, and on a 2-core machine OpenBLAS's idle
# worker threads spinning after numpy's import take CPU from the capture
# process. Set before anything imports numpy; a user's own setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
del _var
