"""vantio-appliance: a verifiable WORM ledger and eBPF enforcer for sovereign hosts.

The public API is small on purpose: the ledger writer, its verifier and the
record model. Everything else is an implementation detail.
"""

__version__ = "0.1.0"
