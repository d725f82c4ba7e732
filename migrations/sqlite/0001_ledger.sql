-- The ledger: organisations, accounts, immutable journal entries and postings,
-- and one balance row per account kept in the posting transaction.
-- Timestamps are INTEGER microseconds since the Unix epoch.

CREATE TABLE organisations (
    id          INTEGER PRIMARY KEY,
    slug        TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE ledger_accounts (
    id          INTEGER PRIMARY KEY,
    org_id      INTEGER NOT NULL REFERENCES organisations (id),
    code        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('asset', 'liability', 'fund', 'income', 'expense')),
    currency    TEXT    NOT NULL CHECK (length(currency) = 3),
    created_at  INTEGER NOT NULL,
    UNIQUE (org_id, code)
) STRICT;

CREATE TABLE ledger_entries (
    id                INTEGER PRIMARY KEY,
    org_id            INTEGER NOT NULL REFERENCES organisations (id),
    idempotency_key   TEXT    NOT NULL UNIQUE,
    occurred_at       INTEGER NOT NULL,
    recorded_at       INTEGER NOT NULL,
    description       TEXT    NOT NULL,
    source_kind       TEXT,
    source_ref        TEXT,
    reverses_entry_id INTEGER UNIQUE REFERENCES ledger_entries (id),
    recorded_by       TEXT
) STRICT;

CREATE INDEX ledger_entries_org_occurred ON ledger_entries (org_id, occurred_at);
CREATE INDEX ledger_entries_source ON ledger_entries (source_kind, source_ref);

CREATE TABLE ledger_postings (
    id          INTEGER PRIMARY KEY,
    entry_id    INTEGER NOT NULL REFERENCES ledger_entries (id),
    account_id  INTEGER NOT NULL REFERENCES ledger_accounts (id),
    amount      INTEGER NOT NULL CHECK (amount <> 0),
    currency    TEXT    NOT NULL
) STRICT;

CREATE INDEX ledger_postings_entry ON ledger_postings (entry_id);
CREATE INDEX ledger_postings_account ON ledger_postings (account_id, id);

-- Balances are kept per account in one or more slots (PostgreSQL spreads a
-- busy account such as the Stripe balance over several rows so concurrent
-- posters do not queue on one row lock); an account's balance is the sum of
-- its slots. org_id and currency are copied from the account so that the
-- balance upsert in the posting transaction also returns what the poster
-- must verify.
CREATE TABLE ledger_balances (
    account_id  INTEGER NOT NULL REFERENCES ledger_accounts (id),
    slot        INTEGER NOT NULL,
    org_id      INTEGER NOT NULL,
    currency    TEXT    NOT NULL,
    balance     INTEGER NOT NULL DEFAULT 0,
    n_postings  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, slot)
) STRICT;

CREATE TRIGGER ledger_postings_are_immutable_update BEFORE UPDATE ON ledger_postings
BEGIN
    SELECT RAISE(ABORT, 'ledger postings are immutable: post a reversing entry');
END;
CREATE TRIGGER ledger_postings_are_immutable_delete BEFORE DELETE ON ledger_postings
BEGIN
    SELECT RAISE(ABORT, 'ledger postings are immutable: post a reversing entry');
END;
CREATE TRIGGER ledger_entries_are_immutable_update BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'journal entries are immutable: post a reversing entry');
END;
CREATE TRIGGER ledger_entries_are_immutable_delete BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'journal entries are immutable: post a reversing entry');
END;
