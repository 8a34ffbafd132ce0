-- 0014: a function of the order path's writes.
--
-- bis_missing(what, keys): raises no_data_found (SQLSTATE P0002) naming the keys a write
-- expected to find, unless there are none. A write sent with others in one round trip
-- (sql/roundtrip.py) cannot look at its rows before the transaction commits; it fails the
-- transaction from inside instead, e.g.
--     WITH u AS (UPDATE ... RETURNING id)
--     SELECT bis_missing('execution', ARRAY(SELECT unnest($2::text[]) EXCEPT SELECT id FROM u))
-- The writer (sql/writer.py) turns the error into a LookupError carrying the message.
CREATE FUNCTION bis_missing(what text, keys text[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(keys) > 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'no_data_found',
            MESSAGE = what || ' ' || array_to_string(keys, ', ') || ' does not exist';
    END IF;
END
$$;
