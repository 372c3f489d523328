"""NanEcho core library: everything testable without a CLI.

Light modules (errors, fsio, schema, store, selection, retention, gitops, summary) never import
torch or numpy; only model, data, checkpoint and trainer do.
"""

__version__ = "0.1.0"
