"""The control plane: a kopf operator that turns EmailPlan resources into running campaigns.

It talks only to the Kubernetes API and to the data-plane HTTP API (never to
SQL or AWS), so it can run with no database driver and no AWS credentials.
"""
