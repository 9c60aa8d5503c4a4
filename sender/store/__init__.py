"""Everything the data plane keeps in PostgreSQL, in one package.

``ledger`` holds plans, messages, claims, results, load jobs and suppressions;
``eventstore`` records SES events and tracking hits. Both change the same counters
and the same suppression list, so the SQL they share (a counter bump, a
suppression insert, the retry of a deadlocked transaction) lives once, in
``shared``.
"""
