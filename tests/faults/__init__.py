"""Fault-injection tests: real network faults from a Toxiproxy server between client and Redis."""
