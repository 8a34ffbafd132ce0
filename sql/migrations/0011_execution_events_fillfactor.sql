-- 0011: room for published_at on the event's own page (issue 11: WAL per order). An outbox row
-- is ~550 bytes (the update's JSON payload), written when its state commits and updated once,
-- ~20 ms later, when the publisher records it as published. With full pages that update found no
-- room, moved the row and logged all of it again. With a quarter of each page kept free, the new
-- version stays on the page and PostgreSQL logs only the bytes that changed (the unchanged prefix
-- and suffix of the row are left out). Not HOT (published_at is in the partial index's
-- predicate), so the primary key still gets one entry per update.
ALTER TABLE execution_events SET (fillfactor = 75);
