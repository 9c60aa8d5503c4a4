"""emailplan: bulk email campaigns on Kubernetes, sent through AWS SES.

The package has three layers (enforced by import-linter, see pyproject.toml):
``emailplan.cli`` on top, then ``emailplan.operator`` (control plane) and
``emailplan.sender`` (data plane), which never import each other, and
``emailplan.runtime`` at the bottom (process set-up shared by every entry point).
"""

__version__ = "0.1.0"
