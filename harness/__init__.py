"""Docker macvlan/ipvlan conformance harness: documented examples as executable, checked scenarios."""

__version__ = "0.1.0"
