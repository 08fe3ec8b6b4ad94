"""Developer scripts (make lock, the stress run, doc figures); not part of the package."""
