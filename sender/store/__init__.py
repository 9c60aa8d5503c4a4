"""Everything the data plane keeps in PostgreSQL, in one package.

The ledger is split by concern: ``plans`` (plan rows, views, counts), ``loading``
(recipients in, release by share, load jobs, suppressions), ``claims`` (leases),
``sendresults`` (outcomes written) and ``pacing`` (the shared rate budget);
``eventstore`` records SES events and tracking hits. Both change the same counters
and the same suppression list, so the SQL they share (a counter bump, a
suppression insert, the retry of a deadlocked transaction) lives once, in
``shared``.
"""
