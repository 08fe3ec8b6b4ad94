"""``resilient-cache demo``: a cache-aside service under real faults, and its report."""
