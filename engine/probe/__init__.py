"""Active probing: `pt-engine ping` and `pt-engine scan`.

One module per part, data flowing one way:

* ``targets``: what the user named, resolved and checked (refusals);
* ``ratelimit``: the token bucket every probe passes;
* ``icmp``: the ICMP echo socket, requests and the matching of replies;
* ``syn``: the raw sockets of ``scan --syn``, SYNs with cookies and the
  matching of their answers (SYN/ACK, reset, ICMP unreachable);
* ``loop``: the epoll loop that sends, times and matches probes (ICMP, TCP
  connect and SYN) under the rate limit and the concurrency;
* ``ping``, ``scan``: the schedules, turning outcomes into stream records
  (``ping``, ``scan``; built by pt_engine.stream), with ``stats`` for the
  figures of ping windows;
* ``table``: the human table on a terminal;
* ``command``: the wiring: options, dry run, outputs (pt_engine.sinks),
  alerts (pt_engine.alerts), signals.
"""
