"""Everything that leaves the gateway: the outbox (the one durable-delivery engine), ticket
composition and follow-up (``ticketing``), the bundle assembly (``bundling``), files added to
tickets (``attach``), notices to people (``notify``) and the destinations (``sinks/``)."""
