-- salons: monthly memberships. An organisation's salon offers tiers; a
-- patron's membership is one Stripe subscription to one tier's price.
-- Amounts are integers in the salon currency's minor unit.

CREATE TABLE salons (
    id                  INTEGER PRIMARY KEY,
    org_id              INTEGER     NOT NULL REFERENCES organisations (id),
    slug                TEXT        NOT NULL UNIQUE,
    name_ja             TEXT        NOT NULL,
    name_en             TEXT        NOT NULL,
    description_ja      TEXT        NOT NULL,
    description_en      TEXT        NOT NULL,
    currency            TEXT        NOT NULL CHECK (length(currency) = 3),
    -- when a patron is charged: on the day they joined, or on the 1st
    billing_anchor      TEXT        NOT NULL CHECK (billing_anchor IN ('start_date', 'first_of_month')),
    -- a tier change applies from the next cycle, or now with proration
    tier_change         TEXT        NOT NULL CHECK (tier_change IN ('next_cycle', 'prorate_now')),
    -- days a past_due patron keeps access while Stripe retries
    grace_days          INTEGER     NOT NULL CHECK (grace_days >= 0 AND grace_days <= 30),
    status              TEXT        NOT NULL CHECK (status IN ('draft', 'open', 'closed')),
    fund_account_id     INTEGER     NOT NULL REFERENCES ledger_accounts (id),
    contact_email       TEXT        NOT NULL,
    created_at          INTEGER     NOT NULL,
    updated_at          INTEGER     NOT NULL
) STRICT;

CREATE INDEX salons_org ON salons (org_id);

CREATE TABLE salon_tiers (
    id                  INTEGER PRIMARY KEY,
    salon_id            INTEGER     NOT NULL REFERENCES salons (id),
    slug                TEXT        NOT NULL,
    name_ja             TEXT        NOT NULL,
    name_en             TEXT        NOT NULL,
    benefits_ja         TEXT        NOT NULL,
    benefits_en         TEXT        NOT NULL,
    -- the price new patrons pay; existing patrons keep the price they joined at
    monthly_price       INTEGER     NOT NULL CHECK (monthly_price > 0),
    seat_limit          INTEGER     CHECK (seat_limit IS NULL OR seat_limit >= 0),
    -- seats held by memberships that are not ended (claimed atomically)
    seats_taken         INTEGER     NOT NULL DEFAULT 0 CHECK (seats_taken >= 0),
    status              TEXT        NOT NULL CHECK (status IN ('active', 'retired')),
    position            INTEGER     NOT NULL,
    stripe_product_id   TEXT,
    stripe_price_id     TEXT,
    created_at          INTEGER     NOT NULL,
    updated_at          INTEGER     NOT NULL,
    UNIQUE (salon_id, slug),
    CHECK (seat_limit IS NULL OR seats_taken <= seat_limit)
) STRICT;

-- Every Stripe Price a tier has had: a subscription names its price, and
-- the price names the tier and what it costs.
CREATE TABLE salon_tier_prices (
    id                  INTEGER PRIMARY KEY,
    tier_id             INTEGER     NOT NULL REFERENCES salon_tiers (id),
    amount              INTEGER     NOT NULL CHECK (amount > 0),
    stripe_price_id     TEXT        NOT NULL UNIQUE,
    created_at          INTEGER     NOT NULL
) STRICT;

CREATE INDEX salon_tier_prices_tier ON salon_tier_prices (tier_id);

-- What members in good standing see on /s/{slug}/members.
CREATE TABLE salon_member_posts (
    id                  INTEGER PRIMARY KEY,
    salon_id            INTEGER     NOT NULL REFERENCES salons (id),
    title_ja            TEXT        NOT NULL,
    title_en            TEXT        NOT NULL,
    body_ja             TEXT        NOT NULL,
    body_en             TEXT        NOT NULL,
    link_url            TEXT,
    created_at          INTEGER     NOT NULL
) STRICT;

CREATE INDEX salon_member_posts_salon ON salon_member_posts (salon_id, created_at);

CREATE TABLE memberships (
    id                      INTEGER PRIMARY KEY,
    public_id               TEXT        NOT NULL UNIQUE,
    salon_id                INTEGER     NOT NULL REFERENCES salons (id),
    tier_id                 INTEGER     NOT NULL REFERENCES salon_tiers (id),
    -- a tier chosen under the next_cycle rule, applied at renewal
    next_tier_id            INTEGER     REFERENCES salon_tiers (id),
    email                   TEXT        NOT NULL,
    locale                  TEXT        NOT NULL CHECK (locale IN ('ja', 'en')),
    -- what this patron pays per month, and the Stripe Price that says so
    amount                  INTEGER     NOT NULL CHECK (amount > 0),
    stripe_price_id         TEXT,
    stripe_customer_id      TEXT,
    stripe_subscription_id  TEXT        UNIQUE,
    checkout_session_id     TEXT        UNIQUE,
    status                  TEXT        NOT NULL
        CHECK (status IN ('incomplete', 'active', 'past_due', 'paused', 'canceling', 'ended')),
    current_period_end      INTEGER    ,
    cancel_at               INTEGER    ,
    paused_until            INTEGER    ,
    past_due_since          INTEGER    ,
    since                   INTEGER    ,
    last_payment_at         INTEGER    ,
    lifetime_paid           INTEGER     NOT NULL DEFAULT 0 CHECK (lifetime_paid >= 0),
    ended_at                INTEGER    ,
    created_at              INTEGER     NOT NULL,
    updated_at              INTEGER     NOT NULL
) STRICT;

-- One membership that is not over per address and salon.
CREATE UNIQUE INDEX memberships_one_live ON memberships (salon_id, lower(email)) WHERE status <> 'ended';
CREATE INDEX memberships_email ON memberships (lower(email));
CREATE INDEX memberships_salon ON memberships (salon_id, status);

-- Invoices of memberships, paid or not: the payment history and receipts.
CREATE TABLE membership_invoices (
    id                  INTEGER PRIMARY KEY,
    membership_id       INTEGER     NOT NULL REFERENCES memberships (id),
    stripe_invoice_id   TEXT        NOT NULL UNIQUE,
    stripe_charge_id    TEXT,
    status              TEXT        NOT NULL CHECK (status IN ('open', 'paid', 'failed', 'action_required', 'void')),
    amount_due          INTEGER     NOT NULL CHECK (amount_due >= 0),
    amount_paid         INTEGER     NOT NULL DEFAULT 0 CHECK (amount_paid >= 0),
    fee                 INTEGER     NOT NULL DEFAULT 0 CHECK (fee >= 0),
    period_start        INTEGER    ,
    period_end          INTEGER    ,
    hosted_invoice_url  TEXT,
    paid_at             INTEGER    ,
    created_at          INTEGER     NOT NULL,
    updated_at          INTEGER     NOT NULL
) STRICT;

CREATE INDEX membership_invoices_membership ON membership_invoices (membership_id, created_at);
