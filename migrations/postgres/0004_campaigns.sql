-- campaigns: funding drives with teams and rewards, the pledges made to
-- them, their charge attempts and settlement, supporter sign-in, and the
-- sandbox payment gateway's own records.
-- Amounts are integers in the campaign currency's minor unit.

CREATE TABLE campaigns (
    id               BIGSERIAL   PRIMARY KEY,
    org_id           BIGINT      NOT NULL REFERENCES organisations (id),
    slug             TEXT        NOT NULL UNIQUE,
    title_ja         TEXT        NOT NULL,
    title_en         TEXT        NOT NULL,
    story_ja         TEXT        NOT NULL,
    story_en         TEXT        NOT NULL,
    currency         TEXT        NOT NULL CHECK (length(currency) = 3),
    goal             BIGINT      NOT NULL CHECK (goal > 0),
    starts_at        TIMESTAMPTZ NOT NULL,
    deadline         TIMESTAMPTZ NOT NULL,
    utc_offset_min   INTEGER     NOT NULL,
    time_zone        TEXT        NOT NULL,
    funding_model    TEXT        NOT NULL CHECK (funding_model IN ('all_or_nothing', 'keep_it_all')),
    status           TEXT        NOT NULL CHECK (status IN ('draft', 'live', 'settling', 'succeeded', 'failed', 'cancelled')),
    pool_rule        TEXT        NOT NULL CHECK (pool_rule IN ('equal', 'pro_rata', 'manual')),
    pool_account_id  BIGINT      NOT NULL REFERENCES ledger_accounts (id),
    contact_email    TEXT        NOT NULL,
    -- maintained aggregates: committed (not yet charged) and collected money,
    -- and the number of pledges counting toward the drive
    pledged          BIGINT      NOT NULL DEFAULT 0,
    collected        BIGINT      NOT NULL DEFAULT 0,
    backers          BIGINT      NOT NULL DEFAULT 0,
    pool_pledged     BIGINT      NOT NULL DEFAULT 0,
    pool_collected   BIGINT      NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    CHECK (deadline > starts_at)
);

CREATE INDEX campaigns_org ON campaigns (org_id);
CREATE INDEX campaigns_status ON campaigns (status, deadline);

CREATE TABLE campaign_teams (
    id           BIGSERIAL   PRIMARY KEY,
    campaign_id  BIGINT      NOT NULL REFERENCES campaigns (id),
    slug         TEXT        NOT NULL,
    name_ja      TEXT        NOT NULL,
    name_en      TEXT        NOT NULL,
    goal         BIGINT      NOT NULL CHECK (goal > 0),
    position     INTEGER     NOT NULL,
    pool_weight  BIGINT      NOT NULL DEFAULT 0 CHECK (pool_weight >= 0),
    account_id   BIGINT      NOT NULL REFERENCES ledger_accounts (id),
    pledged      BIGINT      NOT NULL DEFAULT 0,
    collected    BIGINT      NOT NULL DEFAULT 0,
    backers      BIGINT      NOT NULL DEFAULT 0,
    UNIQUE (campaign_id, slug)
);

CREATE TABLE campaign_rewards (
    id               BIGSERIAL   PRIMARY KEY,
    campaign_id      BIGINT      NOT NULL REFERENCES campaigns (id),
    team_id          BIGINT      REFERENCES campaign_teams (id),
    title_ja         TEXT        NOT NULL,
    title_en         TEXT        NOT NULL,
    description_ja   TEXT        NOT NULL,
    description_en   TEXT        NOT NULL,
    min_amount       BIGINT      NOT NULL CHECK (min_amount > 0),
    quantity         BIGINT      CHECK (quantity IS NULL OR quantity >= 0),
    claimed          BIGINT      NOT NULL DEFAULT 0 CHECK (claimed >= 0),
    available_from   TIMESTAMPTZ,
    available_until  TIMESTAMPTZ,
    position         INTEGER     NOT NULL,
    CHECK (quantity IS NULL OR claimed <= quantity)
);

CREATE INDEX campaign_rewards_campaign ON campaign_rewards (campaign_id, position);

CREATE TABLE pledges (
    id                  BIGSERIAL   PRIMARY KEY,
    public_id           TEXT        NOT NULL UNIQUE,
    campaign_id         BIGINT      NOT NULL REFERENCES campaigns (id),
    team_id             BIGINT      REFERENCES campaign_teams (id),
    reward_id           BIGINT      REFERENCES campaign_rewards (id),
    amount              BIGINT      NOT NULL CHECK (amount > 0),
    currency            TEXT        NOT NULL,
    email               TEXT        NOT NULL,
    display_name        TEXT        NOT NULL,
    anonymous           BOOLEAN     NOT NULL,
    message             TEXT        NOT NULL,
    locale              TEXT        NOT NULL CHECK (locale IN ('ja', 'en')),
    status              TEXT        NOT NULL CHECK (status IN ('pending', 'committed', 'awaiting_payment',
                            'collected', 'payment_failed', 'dropped', 'cancelled', 'expired', 'void', 'refunded')),
    checkout_session_id TEXT        UNIQUE,
    customer_id         TEXT,
    setup_intent_id     TEXT,
    payment_method_id   TEXT,
    payment_intent_id   TEXT,
    charge_id           TEXT,
    amount_refunded     BIGINT      NOT NULL DEFAULT 0,
    failure_code        TEXT,
    failed_at           TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    committed_at        TIMESTAMPTZ,
    collected_at        TIMESTAMPTZ
);

CREATE INDEX pledges_campaign_status ON pledges (campaign_id, status, id);
CREATE INDEX pledges_wall ON pledges (campaign_id, committed_at) WHERE committed_at IS NOT NULL;
CREATE INDEX pledges_email ON pledges (email);
CREATE INDEX pledges_payment_intent ON pledges (payment_intent_id);
CREATE INDEX pledges_charge ON pledges (charge_id);

-- One row per off-session charge attempt, written (with its idempotency key)
-- before Stripe is called, so a crash resumes with the same key.
CREATE TABLE pledge_charge_attempts (
    id                 BIGSERIAL   PRIMARY KEY,
    pledge_id          BIGINT      NOT NULL REFERENCES pledges (id),
    attempt            INTEGER     NOT NULL,
    idempotency_key    TEXT        NOT NULL UNIQUE,
    status             TEXT        NOT NULL CHECK (status IN ('started', 'succeeded', 'declined',
                           'authentication_required', 'failed')),
    payment_intent_id  TEXT,
    error_code         TEXT,
    created_at         TIMESTAMPTZ NOT NULL,
    finished_at        TIMESTAMPTZ,
    UNIQUE (pledge_id, attempt)
);

CREATE TABLE campaign_settlements (
    campaign_id   BIGINT      PRIMARY KEY REFERENCES campaigns (id),
    outcome       TEXT        NOT NULL CHECK (outcome IN ('charging', 'succeeded', 'failed', 'closed')),
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    pool_splits   INTEGER     NOT NULL DEFAULT 0
);

-- Single-use sign-in links for supporters and patrons (stored hashed).
CREATE TABLE sign_in_tokens (
    token_hash   TEXT        PRIMARY KEY,
    email        TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    used_at      TIMESTAMPTZ
);

CREATE TABLE supporter_sessions (
    id_hash      TEXT        PRIMARY KEY,
    email        TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);

-- The sandbox gateway's stand-ins for Stripe objects.
CREATE TABLE sandbox_sessions (
    id               TEXT        PRIMARY KEY,
    idempotency_key  TEXT        NOT NULL UNIQUE,
    mode             TEXT        NOT NULL CHECK (mode IN ('payment', 'setup')),
    amount           BIGINT      NOT NULL,
    currency         TEXT        NOT NULL,
    description      TEXT        NOT NULL,
    email            TEXT        NOT NULL,
    reference        TEXT        NOT NULL,
    success_url      TEXT        NOT NULL,
    cancel_url       TEXT        NOT NULL,
    status           TEXT        NOT NULL CHECK (status IN ('open', 'complete', 'expired')),
    created_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE sandbox_payments (
    id               TEXT        PRIMARY KEY,
    idempotency_key  TEXT        NOT NULL UNIQUE,
    kind             TEXT        NOT NULL CHECK (kind IN ('payment_method', 'payment_intent')),
    reference        TEXT        NOT NULL,
    behaviour        TEXT        NOT NULL,
    amount           BIGINT      NOT NULL,
    currency         TEXT        NOT NULL,
    status           TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);

-- API tokens for automation, scoped to one organisation and a role; stored
-- hashed, shown once, revocable.
CREATE TABLE api_tokens (
    id           BIGSERIAL   PRIMARY KEY,
    org_id       BIGINT      NOT NULL REFERENCES organisations (id),
    token_hash   TEXT        NOT NULL UNIQUE,
    role         TEXT        NOT NULL CHECK (role IN ('owner', 'organiser', 'treasurer', 'viewer')),
    label        TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);
