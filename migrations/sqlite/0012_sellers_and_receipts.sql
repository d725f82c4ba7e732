-- Issue 7: each organisation's seller details (the Specified Commercial
-- Transactions Act disclosure and the issuer of receipts), and receipts:
-- one per payment, numbered by one sequence per organisation, never
-- changed once issued. Owned by the payments crate.

CREATE TABLE seller_settings (
    organisation_id      INTEGER PRIMARY KEY REFERENCES organisations (id),
    seller_name          TEXT    NOT NULL DEFAULT '',
    representative       TEXT    NOT NULL DEFAULT '',
    address              TEXT    NOT NULL DEFAULT '',
    contact_email        TEXT    NOT NULL DEFAULT '',
    contact_phone        TEXT    NOT NULL DEFAULT '',
    registration_number  TEXT,
    tax_rounding         TEXT    NOT NULL DEFAULT 'floor' CHECK (tax_rounding IN ('floor', 'round', 'ceil')),
    extra_costs_ja       TEXT    NOT NULL DEFAULT '',
    extra_costs_en       TEXT    NOT NULL DEFAULT '',
    delivery_ja          TEXT    NOT NULL DEFAULT '',
    delivery_en          TEXT    NOT NULL DEFAULT '',
    cancellation_ja      TEXT    NOT NULL DEFAULT '',
    cancellation_en      TEXT    NOT NULL DEFAULT '',
    updated_at           INTEGER NOT NULL
) STRICT;

CREATE TABLE receipt_sequences (
    organisation_id  INTEGER PRIMARY KEY REFERENCES organisations (id),
    last_number      INTEGER NOT NULL CHECK (last_number >= 0)
) STRICT;

CREATE TABLE receipts (
    id                   INTEGER PRIMARY KEY,
    public_id            TEXT    NOT NULL UNIQUE,
    organisation_id      INTEGER NOT NULL REFERENCES organisations (id),
    number               INTEGER NOT NULL CHECK (number > 0),
    source_kind          TEXT    NOT NULL,
    source_ref           TEXT    NOT NULL,
    payer_name           TEXT    NOT NULL,
    payer_email          TEXT    NOT NULL,
    currency             TEXT    NOT NULL CHECK (length(currency) = 3),
    paid_at              INTEGER NOT NULL,
    issuer_name          TEXT    NOT NULL,
    registration_number  TEXT,
    tax_rounding         TEXT    NOT NULL CHECK (tax_rounding IN ('floor', 'round', 'ceil')),
    price_basis          TEXT    NOT NULL CHECK (price_basis IN ('tax_inclusive', 'tax_exclusive')),
    issued_at            INTEGER NOT NULL,
    UNIQUE (organisation_id, number),
    UNIQUE (source_kind, source_ref)
) STRICT;
CREATE INDEX receipts_payer ON receipts (payer_email);

CREATE TABLE receipt_lines (
    receipt_id      INTEGER NOT NULL REFERENCES receipts (id),
    position        INTEGER NOT NULL CHECK (position >= 0),
    kind            TEXT    NOT NULL CHECK (kind IN ('reward', 'donation', 'membership', 'manual')),
    description_ja  TEXT    NOT NULL,
    description_en  TEXT    NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount >= 0),
    tax_rate        INTEGER CHECK (tax_rate IS NULL OR tax_rate BETWEEN 1 AND 99),
    PRIMARY KEY (receipt_id, position)
) STRICT;

-- An issued receipt is a document handed to someone: it is never changed.
CREATE TRIGGER receipts_immutable BEFORE UPDATE ON receipts
BEGIN SELECT RAISE(ABORT, 'receipts are immutable'); END;
CREATE TRIGGER receipts_undeletable BEFORE DELETE ON receipts
BEGIN SELECT RAISE(ABORT, 'receipts are immutable'); END;
CREATE TRIGGER receipt_lines_immutable BEFORE UPDATE ON receipt_lines
BEGIN SELECT RAISE(ABORT, 'receipts are immutable'); END;
CREATE TRIGGER receipt_lines_undeletable BEFORE DELETE ON receipt_lines
BEGIN SELECT RAISE(ABORT, 'receipts are immutable'); END;
