"""A generative fault campaign: random calls, random faults, random cancellations, on every
topology and stack shape, judged against a model of what each key may hold.

* :mod:`tests.torture.model`: the model and its invariants (what a read may return);
* :mod:`tests.torture.world`: the deployments (standalone, cluster, sentinel) and the faults;
* :mod:`tests.torture.campaign`: workers, cycles, quiescent points, the report;
* ``python -m tests.torture`` (``make torture``): the command; ``test_torture.py``: the
  bounded slice that ``make test`` runs.
"""
