-- The ledger: organisations, accounts, immutable journal entries and postings,
-- and one balance row per account kept in the posting transaction.

CREATE TABLE organisations (
    id          BIGSERIAL PRIMARY KEY,
    slug        TEXT        NOT NULL UNIQUE,
    name        TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE ledger_accounts (
    id          BIGSERIAL PRIMARY KEY,
    org_id      BIGINT      NOT NULL REFERENCES organisations (id),
    code        TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    kind        TEXT        NOT NULL CHECK (kind IN ('asset', 'liability', 'fund', 'income', 'expense')),
    currency    TEXT        NOT NULL CHECK (length(currency) = 3),
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, code)
);

CREATE TABLE ledger_entries (
    id                BIGSERIAL PRIMARY KEY,
    org_id            BIGINT      NOT NULL REFERENCES organisations (id),
    idempotency_key   TEXT        NOT NULL UNIQUE,
    occurred_at       TIMESTAMPTZ NOT NULL,
    recorded_at       TIMESTAMPTZ NOT NULL,
    description       TEXT        NOT NULL,
    source_kind       TEXT,
    source_ref        TEXT,
    reverses_entry_id BIGINT UNIQUE REFERENCES ledger_entries (id),
    recorded_by       TEXT
);

CREATE INDEX ledger_entries_org_occurred ON ledger_entries (org_id, occurred_at);
CREATE INDEX ledger_entries_source ON ledger_entries (source_kind, source_ref);

CREATE TABLE ledger_postings (
    id          BIGSERIAL PRIMARY KEY,
    entry_id    BIGINT NOT NULL REFERENCES ledger_entries (id),
    account_id  BIGINT NOT NULL REFERENCES ledger_accounts (id),
    amount      BIGINT NOT NULL CHECK (amount <> 0),
    currency    TEXT   NOT NULL
);

CREATE INDEX ledger_postings_entry ON ledger_postings (entry_id);
CREATE INDEX ledger_postings_account ON ledger_postings (account_id, id);

-- Balances are kept per account in one or more slots, so concurrent posters
-- to a busy account (the Stripe balance) do not queue on one row lock; an
-- account's balance is the sum of its slots.
CREATE TABLE ledger_balances (
    account_id  BIGINT NOT NULL REFERENCES ledger_accounts (id),
    slot        INTEGER NOT NULL,
    org_id      BIGINT NOT NULL,
    currency    TEXT   NOT NULL,
    balance     BIGINT NOT NULL DEFAULT 0,
    n_postings  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, slot)
);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are immutable: post a reversing entry', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER ledger_postings_are_immutable BEFORE UPDATE OR DELETE ON ledger_postings
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_entries_are_immutable BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_postings_no_truncate BEFORE TRUNCATE ON ledger_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
