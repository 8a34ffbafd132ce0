-- 0010: room for the answer on the claim's own page (issue 11: WAL per order). A routed_orders
-- row is ~2 kB (the request and the routing decision as JSON), so a full page holds four, and
-- storing the response later found no room on the page: the update moved the row and logged all
-- of it again (~1.85 kB), plus a new entry in each index. With half of each page kept free, the
-- update stays on the page (HOT: no index entries) and PostgreSQL logs only the bytes that
-- changed (the response), the unchanged prefix and suffix of the row being left out. The table
-- takes up to twice the space; rows are written once and updated once.
ALTER TABLE routed_orders SET (fillfactor = 50);
