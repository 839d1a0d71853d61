"""User interfaces over the Node: JSON-lines API and line-mode CLI."""
