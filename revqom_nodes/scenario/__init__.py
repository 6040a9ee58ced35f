"""Scenarios around the runtime: the demo, the lossy-network test bed and the end-to-end benches.

The top of the import order (it may import every other package): ``demo`` (``revqom demo``),
``testbed`` and ``testbed_net`` (network namespaces, veth, nftables), ``bench_pipeline`` and
``bench_loss`` (``revqom bench pipeline|loss``), ``flood`` (a fusion node under forged-slice
floods: ``run_flood``, for ``revqom bench attack``), ``keys`` (scenario keys), ``replay``
(``revqom replay``: the replay node from the shell), ``report`` (the run summary: AP, bytes,
latency) and ``render`` (BEV pictures).
"""
