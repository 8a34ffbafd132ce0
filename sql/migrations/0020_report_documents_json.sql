-- 0020: an execution report's documents are stored as the daemon wrote them (issue 11: WAL per
-- order), as 0016 did for the claim's.
--
-- benchmarks, shortfall, unavailable and recommendations become `json` (the compact text the
-- daemon encoded, checked to be JSON) instead of `jsonb`: for these documents of short keys and
-- full-precision numbers jsonb is the larger form (bench/route.py's reports: shortfall 507 ->
-- ~400 bytes, unavailable 328 -> ~270, benchmarks 99 -> ~75). The daemon never reads them back
-- (a TCA request recomputes from the row's prices and market window); `->` and `->>` work on
-- json as on jsonb for a query at a psql prompt or in a reporting tool. The rewrite holds an
-- exclusive lock on execution_reports for one pass over the table (docs/operations.md).
ALTER TABLE execution_reports
    ALTER COLUMN benchmarks TYPE json USING benchmarks::json,
    ALTER COLUMN shortfall TYPE json USING shortfall::json,
    ALTER COLUMN unavailable TYPE json USING unavailable::json,
    ALTER COLUMN recommendations TYPE json USING recommendations::json;
