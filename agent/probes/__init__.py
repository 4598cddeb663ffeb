"""The only code that talks to counters and the gateway: the counter's HTTP API
(``counter_api`` and its tolerant parser ``counter_format``), SSH (``ssh``, ``device``), MQTT
push (``mqtt``), the gateway's own health (``gateway``) and the bounded probe scheduler
(``schedule``). Library errors become a ``ProbeError`` here and nowhere else."""
