"""Local stand-ins made of real parts, for tests, the demo and people.

Each launcher starts a real server on loopback (PostgreSQL, moto in server
mode, etcd + kube-apiserver + kube-controller-manager), waits until it
answers, and stops it with everything it started. Nothing here is imported by
the ``emailplan`` package itself.
"""
