"""Online transaction cost analysis: the daemon side of `tca` (which stays pure). An execution
report per finished execution (written to PostgreSQL with its market window), TCA requests over
NATS and REST answered from those reports or from the live market tapes, peer statistics kept
fresh from the reports, and each result handed to the routing statistics."""
