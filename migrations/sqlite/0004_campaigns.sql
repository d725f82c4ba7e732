-- campaigns: funding drives with teams and rewards, the pledges made to
-- them, their charge attempts and settlement, supporter sign-in, and the
-- sandbox payment gateway's own records.
-- Amounts are integers in the campaign currency's minor unit.

CREATE TABLE campaigns (
    id               INTEGER PRIMARY KEY,
    org_id           INTEGER      NOT NULL REFERENCES organisations (id),
    slug             TEXT        NOT NULL UNIQUE,
    title_ja         TEXT        NOT NULL,
    title_en         TEXT        NOT NULL,
    story_ja         TEXT        NOT NULL,
    story_en         TEXT        NOT NULL,
    currency         TEXT        NOT NULL CHECK (length(currency) = 3),
    goal             INTEGER      NOT NULL CHECK (goal > 0),
    starts_at        INTEGER     NOT NULL,
    deadline         INTEGER     NOT NULL,
    utc_offset_min   INTEGER     NOT NULL,
    time_zone        TEXT        NOT NULL,
    funding_model    TEXT        NOT NULL CHECK (funding_model IN ('all_or_nothing', 'keep_it_all')),
    status           TEXT        NOT NULL CHECK (status IN ('draft', 'live', 'settling', 'succeeded', 'failed', 'cancelled')),
    pool_rule        TEXT        NOT NULL CHECK (pool_rule IN ('equal', 'pro_rata', 'manual')),
    pool_account_id  INTEGER      NOT NULL REFERENCES ledger_accounts (id),
    contact_email    TEXT        NOT NULL,
    -- maintained aggregates: committed (not yet charged) and collected money,
    -- and the number of pledges counting toward the drive
    pledged          INTEGER      NOT NULL DEFAULT 0,
    collected        INTEGER      NOT NULL DEFAULT 0,
    backers          INTEGER      NOT NULL DEFAULT 0,
    pool_pledged     INTEGER      NOT NULL DEFAULT 0,
    pool_collected   INTEGER      NOT NULL DEFAULT 0,
    created_at       INTEGER     NOT NULL,
    updated_at       INTEGER     NOT NULL,
    CHECK (deadline > starts_at)
) STRICT;

CREATE INDEX campaigns_org ON campaigns (org_id);
CREATE INDEX campaigns_status ON campaigns (status, deadline);

CREATE TABLE campaign_teams (
    id           INTEGER PRIMARY KEY,
    campaign_id  INTEGER      NOT NULL REFERENCES campaigns (id),
    slug         TEXT        NOT NULL,
    name_ja      TEXT        NOT NULL,
    name_en      TEXT        NOT NULL,
    goal         INTEGER      NOT NULL CHECK (goal > 0),
    position     INTEGER     NOT NULL,
    pool_weight  INTEGER      NOT NULL DEFAULT 0 CHECK (pool_weight >= 0),
    account_id   INTEGER      NOT NULL REFERENCES ledger_accounts (id),
    pledged      INTEGER      NOT NULL DEFAULT 0,
    collected    INTEGER      NOT NULL DEFAULT 0,
    backers      INTEGER      NOT NULL DEFAULT 0,
    UNIQUE (campaign_id, slug)
) STRICT;

CREATE TABLE campaign_rewards (
    id               INTEGER PRIMARY KEY,
    campaign_id      INTEGER      NOT NULL REFERENCES campaigns (id),
    team_id          INTEGER      REFERENCES campaign_teams (id),
    title_ja         TEXT        NOT NULL,
    title_en         TEXT        NOT NULL,
    description_ja   TEXT        NOT NULL,
    description_en   TEXT        NOT NULL,
    min_amount       INTEGER      NOT NULL CHECK (min_amount > 0),
    quantity         INTEGER      CHECK (quantity IS NULL OR quantity >= 0),
    claimed          INTEGER      NOT NULL DEFAULT 0 CHECK (claimed >= 0),
    available_from   INTEGER    ,
    available_until  INTEGER    ,
    position         INTEGER     NOT NULL,
    CHECK (quantity IS NULL OR claimed <= quantity)
) STRICT;

CREATE INDEX campaign_rewards_campaign ON campaign_rewards (campaign_id, position);

CREATE TABLE pledges (
    id                  INTEGER PRIMARY KEY,
    public_id           TEXT        NOT NULL UNIQUE,
    campaign_id         INTEGER      NOT NULL REFERENCES campaigns (id),
    team_id             INTEGER      REFERENCES campaign_teams (id),
    reward_id           INTEGER      REFERENCES campaign_rewards (id),
    amount              INTEGER      NOT NULL CHECK (amount > 0),
    currency            TEXT        NOT NULL,
    email               TEXT        NOT NULL,
    display_name        TEXT        NOT NULL,
    anonymous           INTEGER     NOT NULL,
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
    amount_refunded     INTEGER      NOT NULL DEFAULT 0,
    failure_code        TEXT,
    failed_at           INTEGER    ,
    created_at          INTEGER     NOT NULL,
    updated_at          INTEGER     NOT NULL,
    committed_at        INTEGER    ,
    collected_at        INTEGER    
) STRICT;

CREATE INDEX pledges_campaign_status ON pledges (campaign_id, status, id);
CREATE INDEX pledges_wall ON pledges (campaign_id, committed_at) WHERE committed_at IS NOT NULL;
CREATE INDEX pledges_email ON pledges (email);
CREATE INDEX pledges_payment_intent ON pledges (payment_intent_id);
CREATE INDEX pledges_charge ON pledges (charge_id);

-- One row per off-session charge attempt, written (with its idempotency key)
-- before Stripe is called, so a crash resumes with the same key.
CREATE TABLE pledge_charge_attempts (
    id                 INTEGER PRIMARY KEY,
    pledge_id          INTEGER      NOT NULL REFERENCES pledges (id),
    attempt            INTEGER     NOT NULL,
    idempotency_key    TEXT        NOT NULL UNIQUE,
    status             TEXT        NOT NULL CHECK (status IN ('started', 'succeeded', 'declined',
                           'authentication_required', 'failed')),
    payment_intent_id  TEXT,
    error_code         TEXT,
    created_at         INTEGER     NOT NULL,
    finished_at        INTEGER    ,
    UNIQUE (pledge_id, attempt)
) STRICT;

CREATE TABLE campaign_settlements (
    campaign_id   INTEGER      PRIMARY KEY REFERENCES campaigns (id),
    outcome       TEXT        NOT NULL CHECK (outcome IN ('charging', 'succeeded', 'failed', 'closed')),
    started_at    INTEGER     NOT NULL,
    finished_at   INTEGER    ,
    pool_splits   INTEGER     NOT NULL DEFAULT 0
) STRICT;

-- Single-use sign-in links for supporters and patrons (stored hashed).
CREATE TABLE sign_in_tokens (
    token_hash   TEXT        PRIMARY KEY,
    email        TEXT        NOT NULL,
    created_at   INTEGER     NOT NULL,
    expires_at   INTEGER     NOT NULL,
    used_at      INTEGER    
) STRICT;

CREATE TABLE supporter_sessions (
    id_hash      TEXT        PRIMARY KEY,
    email        TEXT        NOT NULL,
    created_at   INTEGER     NOT NULL,
    expires_at   INTEGER     NOT NULL
) STRICT;

-- The sandbox gateway's stand-ins for Stripe objects.
CREATE TABLE sandbox_sessions (
    id               TEXT        PRIMARY KEY,
    idempotency_key  TEXT        NOT NULL UNIQUE,
    mode             TEXT        NOT NULL CHECK (mode IN ('payment', 'setup')),
    amount           INTEGER      NOT NULL,
    currency         TEXT        NOT NULL,
    description      TEXT        NOT NULL,
    email            TEXT        NOT NULL,
    reference        TEXT        NOT NULL,
    success_url      TEXT        NOT NULL,
    cancel_url       TEXT        NOT NULL,
    status           TEXT        NOT NULL CHECK (status IN ('open', 'complete', 'expired')),
    created_at       INTEGER     NOT NULL
) STRICT;

CREATE TABLE sandbox_payments (
    id               TEXT        PRIMARY KEY,
    idempotency_key  TEXT        NOT NULL UNIQUE,
    kind             TEXT        NOT NULL CHECK (kind IN ('payment_method', 'payment_intent')),
    reference        TEXT        NOT NULL,
    behaviour        TEXT        NOT NULL,
    amount           INTEGER      NOT NULL,
    currency         TEXT        NOT NULL,
    status           TEXT        NOT NULL,
    created_at       INTEGER     NOT NULL
) STRICT;

-- API tokens for automation, scoped to one organisation and a role; stored
-- hashed, shown once, revocable.
CREATE TABLE api_tokens (
    id           INTEGER     PRIMARY KEY,
    org_id       INTEGER      NOT NULL REFERENCES organisations (id),
    token_hash   TEXT        NOT NULL UNIQUE,
    role         TEXT        NOT NULL CHECK (role IN ('owner', 'organiser', 'treasurer', 'viewer')),
    label        TEXT        NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
) STRICT;
