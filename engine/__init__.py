"""pt-engine: exact per-port packet and byte counters from libpcap, streamed as msgpack."""

__version__ = "0.1.0"
