"""The agent as a systemd service: the daemon loop, sd_notify and the watchdog, logging
(journald-friendly, redacted) and the Prometheus metrics."""
