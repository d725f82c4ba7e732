-- Issue 7: each organisation's seller details (the Specified Commercial
-- Transactions Act disclosure and the issuer of receipts), and receipts:
-- one per payment, numbered by one sequence per organisation, never
-- changed once issued. Owned by the payments crate.

CREATE TABLE seller_settings (
    organisation_id      BIGINT      PRIMARY KEY REFERENCES organisations (id),
    seller_name          TEXT        NOT NULL DEFAULT '',
    representative       TEXT        NOT NULL DEFAULT '',
    address              TEXT        NOT NULL DEFAULT '',
    contact_email        TEXT        NOT NULL DEFAULT '',
    contact_phone        TEXT        NOT NULL DEFAULT '',
    registration_number  TEXT,
    tax_rounding         TEXT        NOT NULL DEFAULT 'floor' CHECK (tax_rounding IN ('floor', 'round', 'ceil')),
    extra_costs_ja       TEXT        NOT NULL DEFAULT '',
    extra_costs_en       TEXT        NOT NULL DEFAULT '',
    delivery_ja          TEXT        NOT NULL DEFAULT '',
    delivery_en          TEXT        NOT NULL DEFAULT '',
    cancellation_ja      TEXT        NOT NULL DEFAULT '',
    cancellation_en      TEXT        NOT NULL DEFAULT '',
    updated_at           TIMESTAMPTZ NOT NULL
);

CREATE TABLE receipt_sequences (
    organisation_id  BIGINT PRIMARY KEY REFERENCES organisations (id),
    last_number      BIGINT NOT NULL CHECK (last_number >= 0)
);

CREATE TABLE receipts (
    id                   BIGSERIAL   PRIMARY KEY,
    public_id            TEXT        NOT NULL UNIQUE,
    organisation_id      BIGINT      NOT NULL REFERENCES organisations (id),
    number               BIGINT      NOT NULL CHECK (number > 0),
    source_kind          TEXT        NOT NULL,
    source_ref           TEXT        NOT NULL,
    payer_name           TEXT        NOT NULL,
    payer_email          TEXT        NOT NULL,
    currency             TEXT        NOT NULL CHECK (length(currency) = 3),
    paid_at              TIMESTAMPTZ NOT NULL,
    issuer_name          TEXT        NOT NULL,
    registration_number  TEXT,
    tax_rounding         TEXT        NOT NULL CHECK (tax_rounding IN ('floor', 'round', 'ceil')),
    price_basis          TEXT        NOT NULL CHECK (price_basis IN ('tax_inclusive', 'tax_exclusive')),
    issued_at            TIMESTAMPTZ NOT NULL,
    UNIQUE (organisation_id, number),
    UNIQUE (source_kind, source_ref)
);
CREATE INDEX receipts_payer ON receipts (payer_email);

CREATE TABLE receipt_lines (
    receipt_id      BIGINT  NOT NULL REFERENCES receipts (id),
    position        INTEGER NOT NULL CHECK (position >= 0),
    kind            TEXT    NOT NULL CHECK (kind IN ('reward', 'donation', 'membership', 'manual')),
    description_ja  TEXT    NOT NULL,
    description_en  TEXT    NOT NULL,
    amount          BIGINT  NOT NULL CHECK (amount >= 0),
    tax_rate        INTEGER CHECK (tax_rate IS NULL OR tax_rate BETWEEN 1 AND 99),
    PRIMARY KEY (receipt_id, position)
);

-- An issued receipt is a document handed to someone: it is never changed.
CREATE FUNCTION receipts_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'receipts are immutable';
END;
$$;
CREATE TRIGGER receipts_immutable BEFORE UPDATE OR DELETE ON receipts
    FOR EACH ROW EXECUTE FUNCTION receipts_refuse_change();
CREATE TRIGGER receipt_lines_immutable BEFORE UPDATE OR DELETE ON receipt_lines
    FOR EACH ROW EXECUTE FUNCTION receipts_refuse_change();
