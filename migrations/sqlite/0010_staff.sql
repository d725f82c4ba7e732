-- staff: the people who run an organisation's console. A staff user signs
-- in with a password (argon2id) or an emailed single-use link, holds one
-- role per organisation (a treasurer optionally limited to one team's
-- fund), and has sessions stored only as SHA-256 hashes. Failed sign-ins
-- are kept for a while to limit guessing per account and per address.
-- API tokens may now be limited to one team as well.

CREATE TABLE staff_users (
    id                   INTEGER PRIMARY KEY,
    email                TEXT        NOT NULL UNIQUE,
    password_hash        TEXT,
    created_at           INTEGER NOT NULL,
    password_changed_at  INTEGER
) STRICT;

CREATE TABLE staff_roles (
    user_id     INTEGER      NOT NULL REFERENCES staff_users (id),
    org_id      INTEGER      NOT NULL REFERENCES organisations (id),
    role        TEXT        NOT NULL CHECK (role IN ('owner', 'organiser', 'treasurer', 'viewer')),
    team_id     INTEGER      REFERENCES campaign_teams (id),
    invited_by  TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, org_id),
    CHECK (team_id IS NULL OR role = 'treasurer')
) STRICT;

CREATE INDEX staff_roles_org ON staff_roles (org_id);

CREATE TABLE staff_sign_in_tokens (
    token_hash  TEXT        PRIMARY KEY,
    user_id     INTEGER      NOT NULL REFERENCES staff_users (id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
) STRICT;

CREATE TABLE staff_sessions (
    id_hash     TEXT        PRIMARY KEY,
    user_id     INTEGER      NOT NULL REFERENCES staff_users (id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX staff_sessions_user ON staff_sessions (user_id);

-- One row per refused sign-in; scope is 'account:{email}' or 'address:{ip}'.
CREATE TABLE staff_sign_in_failures (
    id          INTEGER PRIMARY KEY,
    scope       TEXT        NOT NULL,
    failed_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX staff_sign_in_failures_scope ON staff_sign_in_failures (scope, failed_at);

ALTER TABLE api_tokens ADD COLUMN team_id INTEGER REFERENCES campaign_teams (id);

-- Refunds the sandbox payment gateway made (owned by payments' sandbox).
CREATE TABLE sandbox_refunds (
    id               TEXT        PRIMARY KEY,
    idempotency_key  TEXT        NOT NULL UNIQUE,
    payment_intent   TEXT        NOT NULL,
    amount           INTEGER     NOT NULL CHECK (amount > 0),
    currency         TEXT        NOT NULL,
    created_at       INTEGER     NOT NULL
) STRICT;

CREATE INDEX sandbox_refunds_payment_intent ON sandbox_refunds (payment_intent);

-- Refunds asked for from the console or the API, one row per request (its
-- key made when the form was shown), written before the payment provider
-- is called so a button pressed twice asks once.
CREATE TABLE staff_refunds (
    request_key   TEXT        PRIMARY KEY,
    org_id        INTEGER     NOT NULL REFERENCES organisations (id),
    pledge_id     INTEGER     NOT NULL REFERENCES pledges (id),
    amount        INTEGER     NOT NULL CHECK (amount > 0),
    currency      TEXT        NOT NULL,
    requested_by  TEXT        NOT NULL,
    status        TEXT        NOT NULL CHECK (status IN ('requested', 'succeeded', 'failed')),
    refund_id     TEXT,
    failure       TEXT,
    created_at    INTEGER     NOT NULL
) STRICT;

CREATE INDEX staff_refunds_pledge ON staff_refunds (pledge_id);
