-- 0016: the claim's documents are stored as the daemon wrote them (issue 11: WAL per order).
--
-- request, response and routing_decision become `json` (the text, checked to be JSON) instead
-- of `jsonb` (a parsed binary form). For these documents jsonb is the larger one: every number
-- of a routing decision's candidates becomes a numeric with a 4-byte entry header, and every
-- key an entry of its own. Measured on bench/route.py's orders, per row: routing_decision
-- 1,028 -> 772 bytes, request 277 -> 236, response 332 -> 301; each is written to the WAL once
-- (the response by the update that answers the claim).
--
-- Nothing queries inside them with jsonb operators: they are read whole (`::text`) and decoded
-- by the daemon, which also wrote them; `->` and `->>` work on json as on jsonb for an operator
-- at a psql prompt. The rewrite takes an exclusive lock on routed_orders for the time of one
-- pass over the table (docs/operations.md, upgrade notes).
ALTER TABLE routed_orders
    ALTER COLUMN request TYPE json USING request::json,
    ALTER COLUMN response TYPE json USING response::json,
    ALTER COLUMN routing_decision TYPE json USING routing_decision::json;

-- The smaller rows would now fit three to a page at 0010's fillfactor 50, and the three updates
-- answering them (each a new, longer version of the row: ~1.3 -> ~1.65 kB) would not all find
-- room: bench/route.py saw 0.44 of its 1.2 updates per order move their row, each logging all of
-- it again. At 40 a page takes two claims, as it did before, with room for both answers.
ALTER TABLE routed_orders SET (fillfactor = 40);
