"""The one HTTP client that probes and sinks share: total deadlines enforced at the socket,
size caps, no redirects for counters, library errors mapped to ``ProbeError``."""
