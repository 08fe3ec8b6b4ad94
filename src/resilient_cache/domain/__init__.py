"""The port: protocol, result type and errors. Pure Python, no I/O."""
