"""pt-engine's benchmark suite: ``python -m benchmarks`` (see benchmarks/README.md).

Never imported by ``engine`` or ``tests``; it drives pt-engine and its peers
as separate processes only.
"""
