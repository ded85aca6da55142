-- Herald schema v9: dead letters can be sent back (`herald-ledger dead-letters replay`) once
-- their cause is fixed; a replayed letter is marked so it is not sent twice by the next run.
ALTER TABLE dead_letters ADD COLUMN replayed_at timestamptz;
