"""Backends that turn a backend-neutral Plan into real (or rendered) network state."""
