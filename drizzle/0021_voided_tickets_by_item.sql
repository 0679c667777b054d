-- Retention deletes an archived item's voided tickets (a void is needed only while its ticket could
-- come back: a Redis rollback, a stalled job, long before retention); one row per user cancel was
-- kept for good. By item, so the delete reads only that item's rows.
CREATE INDEX IF NOT EXISTS voided_tickets_item_id ON voided_tickets (item_id);
