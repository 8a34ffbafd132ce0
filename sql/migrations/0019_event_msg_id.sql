-- 0019: execution_events.msg_id goes (issue 11: WAL per order). It was always
-- "<execution_id>:<sequence>" (nursery/updates.py): the row's own key written a second time,
-- ~40 bytes per update. The daemon makes it from the key (sql.records.OutboxEvent.msg_id); at a
-- psql prompt it is `execution_id || ':' || sequence`.
ALTER TABLE execution_events DROP COLUMN msg_id;
