"""Pure judgement: evidence in, findings and verdicts out. No I/O, no global state."""
