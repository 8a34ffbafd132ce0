"""Market data: what the service receives from the Market Data Service over NATS (quotes,
trades, official closes), and what it keeps of it — the last quote per symbol (arrival prices),
bounded tapes of quotes and trades (TCA windows), the closes, and the online volatility / volume
/ spread estimates that the routing impact model reads."""
