//! Every query on the tables this crate owns: `organisations`,
//! `ledger_accounts`, `ledger_entries`, `ledger_postings`, `ledger_balances`.
//!
//! Writes take a [`Tx`] so that a flow can commit a domain change and its
//! ledger entry atomically; reads take the [`Db`].

use std::collections::BTreeMap;

use sqlx::AssertSqlSafe;

use crate::account::{Account, AccountBalance, AccountKind, NewAccount, Organisation};
use crate::db::{Db, Tx};
use crate::entry::{EntryHeader, IdempotencyKey, NewEntry, NewPosting, SourceRef, canonical};
use crate::money::{Currency, Money};
use crate::{AccountId, EntryId, LedgerError, OrgId, Timestamp, on_db, on_tx};

/// What posting an entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// The entry was written.
    Created(EntryId),
    /// An identical entry with this idempotency key already existed; nothing
    /// was written.
    Replayed(EntryId),
}

impl Posted {
    pub fn entry_id(self) -> EntryId {
        match self {
            Posted::Created(id) | Posted::Replayed(id) => id,
        }
    }
}

/// A journal entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: EntryId,
    pub org: OrgId,
    pub key: IdempotencyKey,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    pub description: String,
    pub source: Option<SourceRef>,
    pub reverses: Option<EntryId>,
    pub recorded_by: Option<String>,
    pub postings: Vec<NewPosting>,
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    id: i64,
    org_id: i64,
    idempotency_key: String,
    occurred_at: Timestamp,
    recorded_at: Timestamp,
    description: String,
    source_kind: Option<String>,
    source_ref: Option<String>,
    reverses_entry_id: Option<i64>,
    recorded_by: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PostingRow {
    account_id: i64,
    amount: i64,
    currency: String,
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: i64,
    org_id: i64,
    code: String,
    name: String,
    kind: String,
    currency: String,
}

#[derive(sqlx::FromRow)]
struct AccountBalanceRow {
    #[sqlx(flatten)]
    account: AccountRow,
    balance: i64,
    n_postings: i64,
}

#[derive(sqlx::FromRow)]
struct OrganisationRow {
    id: i64,
    slug: String,
    name: String,
}

fn currency(code: &str) -> Result<Currency, LedgerError> {
    Currency::from_code(code).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

impl TryFrom<AccountRow> for Account {
    type Error = LedgerError;
    fn try_from(r: AccountRow) -> Result<Account, LedgerError> {
        Ok(Account {
            id: AccountId(r.id),
            org: OrgId(r.org_id),
            kind: AccountKind::parse(&r.kind).ok_or_else(|| LedgerError::Corrupt(r.kind.clone()))?,
            currency: currency(&r.currency)?,
            code: r.code,
            name: r.name,
        })
    }
}

impl TryFrom<PostingRow> for NewPosting {
    type Error = LedgerError;
    fn try_from(r: PostingRow) -> Result<NewPosting, LedgerError> {
        Ok(NewPosting { account: AccountId(r.account_id), amount: Money::new(r.amount, currency(&r.currency)?) })
    }
}

impl From<OrganisationRow> for Organisation {
    fn from(r: OrganisationRow) -> Organisation {
        Organisation { id: OrgId(r.id), slug: r.slug, name: r.name }
    }
}

// ---------------------------------------------------------------- organisations

pub async fn create_organisation(tx: &mut Tx, slug: &str, name: &str) -> Result<Organisation, LedgerError> {
    let sql = "INSERT INTO organisations (slug, name, created_at) VALUES ($1, $2, $3)
               ON CONFLICT (slug) DO NOTHING RETURNING id";
    let id: Option<i64> = on_tx!(tx, c => sqlx::query_scalar(sql)
        .bind(slug).bind(name).bind(Timestamp::now())
        .fetch_optional(c).await?);
    let id = id.ok_or_else(|| LedgerError::DuplicateOrganisation(slug.to_owned()))?;
    Ok(Organisation { id: OrgId(id), slug: slug.to_owned(), name: name.to_owned() })
}

pub async fn organisation_by_slug(db: &Db, slug: &str) -> Result<Option<Organisation>, LedgerError> {
    let sql = "SELECT id, slug, name FROM organisations WHERE slug = $1";
    let row: Option<OrganisationRow> = on_db!(db, p => sqlx::query_as(sql).bind(slug).fetch_optional(p).await?);
    Ok(row.map(Organisation::from))
}

pub async fn organisations(db: &Db) -> Result<Vec<Organisation>, LedgerError> {
    let sql = "SELECT id, slug, name FROM organisations ORDER BY slug";
    let rows: Vec<OrganisationRow> = on_db!(db, p => sqlx::query_as(sql).fetch_all(p).await?);
    Ok(rows.into_iter().map(Organisation::from).collect())
}

// ---------------------------------------------------------------- accounts

/// Opens an account and its balance row.
pub async fn create_account(tx: &mut Tx, new: &NewAccount) -> Result<Account, LedgerError> {
    let sql = "INSERT INTO ledger_accounts (org_id, code, name, kind, currency, created_at)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (org_id, code) DO NOTHING RETURNING id";
    let balance_sql = "INSERT INTO ledger_balances (account_id, slot, org_id, currency) VALUES ($1, 0, $2, $3)";
    let id: i64 = on_tx!(tx, c => {
        let id: Option<i64> = sqlx::query_scalar(sql)
            .bind(new.org.0).bind(&new.code).bind(&new.name).bind(new.kind.as_str())
            .bind(new.currency.code()).bind(Timestamp::now())
            .fetch_optional(&mut *c).await?;
        let id = id.ok_or_else(|| LedgerError::DuplicateAccountCode(new.code.clone()))?;
        sqlx::query(balance_sql).bind(id).bind(new.org.0).bind(new.currency.code()).execute(c).await?;
        id
    });
    Ok(Account {
        id: AccountId(id),
        org: new.org,
        code: new.code.clone(),
        name: new.name.clone(),
        kind: new.kind,
        currency: new.currency,
    })
}

/// The account with `new.code`, opened first if the organisation has none.
/// Refuses an existing account of another kind or currency.
pub async fn ensure_account(tx: &mut Tx, new: &NewAccount) -> Result<Account, LedgerError> {
    let insert = "INSERT INTO ledger_accounts (org_id, code, name, kind, currency, created_at)
                  VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (org_id, code) DO NOTHING RETURNING id";
    let balance_sql = "INSERT INTO ledger_balances (account_id, slot, org_id, currency) VALUES ($1, 0, $2, $3)";
    let select = "SELECT id, org_id, code, name, kind, currency FROM ledger_accounts WHERE org_id = $1 AND code = $2";
    let row: AccountRow = on_tx!(tx, c => {
        let id: Option<i64> = sqlx::query_scalar(insert)
            .bind(new.org.0).bind(&new.code).bind(&new.name).bind(new.kind.as_str())
            .bind(new.currency.code()).bind(Timestamp::now())
            .fetch_optional(&mut *c).await?;
        if let Some(id) = id {
            sqlx::query(balance_sql).bind(id).bind(new.org.0).bind(new.currency.code()).execute(&mut *c).await?;
        }
        sqlx::query_as(select).bind(new.org.0).bind(&new.code).fetch_one(c).await?
    });
    let account = Account::try_from(row)?;
    if account.kind != new.kind || account.currency != new.currency {
        return Err(LedgerError::DuplicateAccountCode(new.code.clone()));
    }
    Ok(account)
}

pub async fn account_by_code(db: &Db, org: OrgId, code: &str) -> Result<Option<Account>, LedgerError> {
    let sql = "SELECT id, org_id, code, name, kind, currency FROM ledger_accounts
               WHERE org_id = $1 AND code = $2";
    let row: Option<AccountRow> = on_db!(db, p => sqlx::query_as(sql).bind(org.0).bind(code).fetch_optional(p).await?);
    row.map(Account::try_from).transpose()
}

/// An account's balance, read from its balance slots (at most
/// [`BALANCE_SLOTS`] rows): constant time however many postings it has.
pub async fn balance(db: &Db, account: AccountId) -> Result<Money, LedgerError> {
    let sql = "SELECT CAST(SUM(balance) AS BIGINT), MIN(currency) FROM ledger_balances WHERE account_id = $1";
    let row: (Option<i64>, Option<String>) = on_db!(db, p => sqlx::query_as(sql).bind(account.0).fetch_one(p).await?);
    match row {
        (Some(amount), Some(code)) => Ok(Money::new(amount, currency(&code)?)),
        _ => Err(LedgerError::UnknownAccount(account)),
    }
}

/// Slots per account balance on PostgreSQL. Concurrent transactions posting
/// to the same account use different slots (one per transaction, taken in
/// turn within a process), so they rarely wait on one row lock; SQLite has a
/// single writer and uses one slot.
pub const BALANCE_SLOTS: u64 = 16;

/// Every account of an organisation with its balance, ordered by code.
pub async fn balances(db: &Db, org: OrgId) -> Result<Vec<AccountBalance>, LedgerError> {
    let sql = "SELECT a.id, a.org_id, a.code, a.name, a.kind, a.currency,
                      CAST(COALESCE(SUM(b.balance), 0) AS BIGINT) AS balance,
                      CAST(COALESCE(SUM(b.n_postings), 0) AS BIGINT) AS n_postings
               FROM ledger_accounts a LEFT JOIN ledger_balances b ON b.account_id = a.id
               WHERE a.org_id = $1
               GROUP BY a.id, a.org_id, a.code, a.name, a.kind, a.currency ORDER BY a.code";
    let rows: Vec<AccountBalanceRow> = on_db!(db, p => sqlx::query_as(sql).bind(org.0).fetch_all(p).await?);
    rows.into_iter()
        .map(|r| {
            let account = Account::try_from(r.account)?;
            let balance = Money::new(r.balance, account.currency);
            Ok(AccountBalance { account, balance, n_postings: r.n_postings })
        })
        .collect()
}

// ---------------------------------------------------------------- posting

/// Posts a balanced entry inside the caller's transaction.
///
/// The same idempotency key posted again with the same postings returns
/// [`Posted::Replayed`] and writes nothing; with different postings it is
/// refused, because one key must name one money movement. After any error
/// the transaction may hold part of the entry: roll it back.
pub async fn post(tx: &mut Tx, entry: &NewEntry) -> Result<Posted, LedgerError> {
    // Per account: the net change, the number of postings, the currency.
    let mut deltas: BTreeMap<AccountId, (i64, i64, Currency)> = BTreeMap::new();
    for p in entry.postings() {
        let d = deltas.entry(p.account).or_insert((0, 0, p.amount.currency()));
        if d.2 != p.amount.currency() {
            return Err(LedgerError::CurrencyMismatch { account: p.account, posted: p.amount.currency() });
        }
        d.0 = d.0.checked_add(p.amount.amount()).ok_or(LedgerError::Overflow)?;
        d.1 += 1;
    }
    let written = match tx.backend() {
        crate::Backend::Postgres => post_in_one_statement(tx, entry, &deltas).await?,
        crate::Backend::Sqlite => post_statement_by_statement(tx, entry, &deltas).await?,
    };
    let Some((entry_id, balances)) = written else {
        return replay(tx, entry).await;
    };
    // Each balance row written names its account's organisation and
    // currency; an account that does not exist wrote none.
    for (account, (_, _, posted)) in &deltas {
        let (org, code) = balances
            .iter()
            .find(|(id, _, _)| *id == account.0)
            .map(|(_, org, code)| (*org, code.as_str()))
            .ok_or(LedgerError::UnknownAccount(*account))?;
        if org != entry.header().org.0 {
            return Err(LedgerError::ForeignAccount(*account));
        }
        if code != posted.code() {
            return Err(LedgerError::CurrencyMismatch { account: *account, posted: *posted });
        }
    }
    tx.entries_posted += 1;
    Ok(Posted::Created(EntryId(entry_id)))
}

/// Posts several entries, each as [`post`] would: the result is [`post`]'s
/// for each, in order. On PostgreSQL every new entry, its postings and the
/// balance slots they move are written in one statement (a month-end batch
/// of renewals posts hundreds of entries to the same two accounts: one
/// balance upsert per account, not per entry); an entry whose key exists is
/// then checked as a replay. Entries that reverse another, or repeat a key
/// of the same batch, are posted one by one, as on SQLite.
pub async fn post_many(tx: &mut Tx, entries: &[NewEntry]) -> Result<Vec<Posted>, LedgerError> {
    let mut keys = std::collections::HashSet::new();
    let together = tx.backend() == crate::Backend::Postgres
        && entries.len() > 1
        && entries.iter().all(|e| e.reverses().is_none() && keys.insert(e.header().key.as_str()));
    if !together {
        let mut posted = Vec::with_capacity(entries.len());
        for entry in entries {
            posted.push(post(tx, entry).await?);
        }
        return Ok(posted);
    }
    check_accounts(tx, entries).await?;
    let created = post_together(tx, entries).await?;
    let mut posted = Vec::with_capacity(entries.len());
    for entry in entries {
        match created.get(entry.header().key.as_str()) {
            Some(id) => posted.push(Posted::Created(EntryId(*id))),
            None => posted.push(replay(tx, entry).await?),
        }
    }
    tx.entries_posted += created.len() as u64;
    Ok(posted)
}

/// Refuses, before anything is written, a posting to an account that does
/// not exist, belongs to another organisation than its entry, or keeps
/// another currency: what [`post`] checks of the balance rows it wrote.
async fn check_accounts(tx: &mut Tx, entries: &[NewEntry]) -> Result<(), LedgerError> {
    let mut ids: Vec<i64> = entries.iter().flat_map(|e| e.postings().iter().map(|p| p.account.0)).collect();
    ids.sort_unstable();
    ids.dedup();
    let crate::db::TxConn::Postgres(c) = &mut tx.conn else { unreachable!("called for PostgreSQL transactions only") };
    let sql = "SELECT id, org_id, currency FROM ledger_accounts WHERE id = ANY($1)";
    let accounts: Vec<(i64, i64, String)> =
        sqlx::query_as(sql).bind(&ids).persistent(false).fetch_all(&mut **c).await?;
    for entry in entries {
        for p in entry.postings() {
            let (_, org, code) =
                accounts.iter().find(|(id, _, _)| *id == p.account.0).ok_or(LedgerError::UnknownAccount(p.account))?;
            if *org != entry.header().org.0 {
                return Err(LedgerError::ForeignAccount(p.account));
            }
            if code != p.amount.currency().code() {
                return Err(LedgerError::CurrencyMismatch { account: p.account, posted: p.amount.currency() });
            }
        }
    }
    Ok(())
}

/// PostgreSQL: the entries whose keys are new, their postings and, per
/// account, one balance upsert of their net (in account order); the ids of
/// the entries written, by key.
async fn post_together(
    tx: &mut Tx,
    entries: &[NewEntry],
) -> Result<std::collections::HashMap<String, i64>, LedgerError> {
    let sql = "WITH input AS (
            SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
                                 $7::text[]) WITH ORDINALITY
                AS e(org_id, idempotency_key, occurred_at, description, source_kind, source_ref, recorded_by, n)),
        entry AS (
            INSERT INTO ledger_entries
                (org_id, idempotency_key, occurred_at, recorded_at, description, source_kind, source_ref, recorded_by)
            SELECT org_id, idempotency_key, occurred_at, $8, description, source_kind, source_ref, recorded_by
            FROM input ORDER BY n
            ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key),
        posting AS (
            SELECT entry.id AS entry_id, p.account_id, p.amount, p.currency, p.n
            FROM UNNEST($9::text[], $10::bigint[], $11::bigint[], $12::text[]) WITH ORDINALITY
                AS p(idempotency_key, account_id, amount, currency, n)
            JOIN entry ON entry.idempotency_key = p.idempotency_key),
        balances AS (
            INSERT INTO ledger_balances (account_id, slot, org_id, currency, balance, n_postings)
            SELECT a.id, $13, a.org_id, a.currency, SUM(posting.amount), COUNT(*)
            FROM posting JOIN ledger_accounts a ON a.id = posting.account_id
            GROUP BY a.id, a.org_id, a.currency
            ORDER BY a.id
            ON CONFLICT (account_id, slot) DO UPDATE
            SET balance = ledger_balances.balance + excluded.balance,
                n_postings = ledger_balances.n_postings + excluded.n_postings),
        written AS (
            INSERT INTO ledger_postings (entry_id, account_id, amount, currency)
            SELECT entry_id, account_id, amount, currency FROM posting ORDER BY n)
        SELECT idempotency_key, id FROM entry";
    let headers: Vec<&EntryHeader> = entries.iter().map(NewEntry::header).collect();
    let postings: Vec<(&str, &NewPosting)> =
        entries.iter().flat_map(|e| e.postings().iter().map(|p| (e.header().key.as_str(), p))).collect();
    let slot = tx.balance_slot;
    let crate::db::TxConn::Postgres(c) = &mut tx.conn else { unreachable!("called for PostgreSQL transactions only") };
    let rows: Vec<(String, i64)> = sqlx::query_as(sql)
        .bind(headers.iter().map(|h| h.org.0).collect::<Vec<_>>())
        .bind(headers.iter().map(|h| h.key.as_str()).collect::<Vec<_>>())
        .bind(headers.iter().map(|h| h.occurred_at).collect::<Vec<_>>())
        .bind(headers.iter().map(|h| h.description.as_str()).collect::<Vec<_>>())
        .bind(headers.iter().map(|h| h.source.as_ref().map(|s| s.kind.as_str())).collect::<Vec<_>>())
        .bind(headers.iter().map(|h| h.source.as_ref().map(|s| s.reference.as_str())).collect::<Vec<_>>())
        .bind(headers.iter().map(|h| h.recorded_by.as_deref()).collect::<Vec<_>>())
        .bind(Timestamp::now())
        .bind(postings.iter().map(|(key, _)| *key).collect::<Vec<_>>())
        .bind(postings.iter().map(|(_, p)| p.account.0).collect::<Vec<_>>())
        .bind(postings.iter().map(|(_, p)| p.amount.amount()).collect::<Vec<_>>())
        .bind(postings.iter().map(|(_, p)| p.amount.currency().code()).collect::<Vec<_>>())
        .bind(slot)
        .fetch_all(&mut **c)
        .await?;
    Ok(rows.into_iter().collect())
}

/// The new entry's id and, per balance row written, its account, the
/// account's organisation and currency; `None` when the key exists.
type Written = Option<(i64, Vec<(i64, i64, String)>)>;

const INSERT_ENTRY: &str = "INSERT INTO ledger_entries
    (org_id, idempotency_key, occurred_at, recorded_at, description, source_kind, source_ref,
     reverses_entry_id, recorded_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (idempotency_key) DO NOTHING RETURNING id";

/// PostgreSQL: the entry, its balance slots and its postings in one
/// statement (one round trip). The balance upserts run in account order, so
/// posters never wait on each other in a cycle; postings are written only
/// when every account exists (an unknown one is reported by the caller).
async fn post_in_one_statement(
    tx: &mut Tx,
    entry: &NewEntry,
    deltas: &BTreeMap<AccountId, (i64, i64, Currency)>,
) -> Result<Written, LedgerError> {
    let sql = "WITH entry AS (
            INSERT INTO ledger_entries
                (org_id, idempotency_key, occurred_at, recorded_at, description, source_kind, source_ref,
                 reverses_entry_id, recorded_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (idempotency_key) DO NOTHING RETURNING id),
        balances AS (
            INSERT INTO ledger_balances (account_id, slot, org_id, currency, balance, n_postings)
            SELECT a.id, $10, a.org_id, a.currency, d.net, d.n
            FROM UNNEST($11::bigint[], $12::bigint[], $13::bigint[]) AS d(account_id, net, n)
            JOIN ledger_accounts a ON a.id = d.account_id
            WHERE EXISTS (SELECT 1 FROM entry)
            ORDER BY a.id
            ON CONFLICT (account_id, slot) DO UPDATE
            SET balance = ledger_balances.balance + excluded.balance,
                n_postings = ledger_balances.n_postings + excluded.n_postings
            RETURNING account_id, org_id, currency),
        postings AS (
            INSERT INTO ledger_postings (entry_id, account_id, amount, currency)
            SELECT entry.id, p.account_id, p.amount, p.currency
            FROM entry, UNNEST($14::bigint[], $15::bigint[], $16::text[]) WITH ORDINALITY
                AS p(account_id, amount, currency, n)
            WHERE (SELECT COUNT(*) FROM ledger_accounts WHERE id = ANY($11)) = cardinality($11)
            ORDER BY p.n)
        SELECT entry.id, b.account_id, b.org_id, b.currency FROM entry LEFT JOIN balances b ON true";
    let h = entry.header();
    let crate::db::TxConn::Postgres(c) = &mut tx.conn else { unreachable!("called for PostgreSQL transactions only") };
    // The entry's id, then per balance row: account, organisation, currency.
    type Row = (i64, Option<i64>, Option<i64>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(sql)
        .bind(h.org.0)
        .bind(h.key.as_str())
        .bind(h.occurred_at)
        .bind(Timestamp::now())
        .bind(&h.description)
        .bind(h.source.as_ref().map(|s| s.kind.as_str()))
        .bind(h.source.as_ref().map(|s| s.reference.as_str()))
        .bind(entry.reverses().map(|e| e.0))
        .bind(h.recorded_by.as_deref())
        .bind(tx.balance_slot)
        .bind(deltas.keys().map(|a| a.0).collect::<Vec<_>>())
        .bind(deltas.values().map(|d| d.0).collect::<Vec<_>>())
        .bind(deltas.values().map(|d| d.1).collect::<Vec<_>>())
        .bind(entry.postings().iter().map(|p| p.account.0).collect::<Vec<_>>())
        .bind(entry.postings().iter().map(|p| p.amount.amount()).collect::<Vec<_>>())
        .bind(entry.postings().iter().map(|p| p.amount.currency().code()).collect::<Vec<_>>())
        .fetch_all(&mut **c)
        .await
        .map_err(|e| reversal_conflict(e, entry))?;
    let Some(entry_id) = rows.first().map(|r| r.0) else { return Ok(None) };
    let balances = rows.into_iter().filter_map(|(_, account, org, code)| Some((account?, org?, code?))).collect();
    Ok(Some((entry_id, balances)))
}

/// SQLite: the entry, one upsert per balance in account order, then the
/// postings, as separate statements (SQLite has no data-modifying `WITH`).
async fn post_statement_by_statement(
    tx: &mut Tx,
    entry: &NewEntry,
    deltas: &BTreeMap<AccountId, (i64, i64, Currency)>,
) -> Result<Written, LedgerError> {
    let h = entry.header();
    let inserted: Option<i64> = on_tx!(tx, c => sqlx::query_scalar(INSERT_ENTRY)
        .bind(h.org.0)
        .bind(h.key.as_str())
        .bind(h.occurred_at)
        .bind(Timestamp::now())
        .bind(&h.description)
        .bind(h.source.as_ref().map(|s| s.kind.as_str()))
        .bind(h.source.as_ref().map(|s| s.reference.as_str()))
        .bind(entry.reverses().map(|e| e.0))
        .bind(h.recorded_by.as_deref())
        .fetch_optional(c)
        .await
        .map_err(|e| reversal_conflict(e, entry))?);
    let Some(entry_id) = inserted else { return Ok(None) };
    let upsert = "INSERT INTO ledger_balances (account_id, slot, org_id, currency, balance, n_postings)
                  SELECT id, $2, org_id, currency, $3, $4 FROM ledger_accounts WHERE id = $1
                  ON CONFLICT (account_id, slot) DO UPDATE
                  SET balance = ledger_balances.balance + excluded.balance,
                      n_postings = ledger_balances.n_postings + excluded.n_postings
                  RETURNING org_id, currency";
    let slot = tx.balance_slot;
    let mut balances = Vec::new();
    for (account, (net, count, _)) in deltas {
        let row: Option<(i64, String)> = on_tx!(tx, c => sqlx::query_as(upsert)
            .bind(account.0).bind(slot).bind(net).bind(count)
            .fetch_optional(c).await?);
        match row {
            Some((org, code)) => balances.push((account.0, org, code)),
            // Reported by the caller; no postings for an unknown account.
            None => return Ok(Some((entry_id, balances))),
        }
    }
    let mut sql = String::from("INSERT INTO ledger_postings (entry_id, account_id, amount, currency) VALUES ");
    for i in 0..entry.postings().len() {
        let n = i * 3;
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("($1, ${}, ${}, ${})", n + 2, n + 3, n + 4));
    }
    on_tx!(tx, c => {
        let mut q = sqlx::query(AssertSqlSafe(sql.clone())).bind(entry_id);
        for p in entry.postings() {
            q = q.bind(p.account.0).bind(p.amount.amount()).bind(p.amount.currency().code());
        }
        q.execute(c).await?;
    });
    Ok(Some((entry_id, balances)))
}

fn reversal_conflict(e: sqlx::Error, entry: &NewEntry) -> LedgerError {
    match (&e, entry.reverses()) {
        (sqlx::Error::Database(db), Some(original)) if db.is_unique_violation() => {
            LedgerError::AlreadyReversed(original)
        }
        _ => LedgerError::Database(e),
    }
}

async fn replay(tx: &mut Tx, entry: &NewEntry) -> Result<Posted, LedgerError> {
    let key = entry.header().key.as_str();
    let head = "SELECT id, org_id FROM ledger_entries WHERE idempotency_key = $1";
    let postings = "SELECT account_id, amount, currency FROM ledger_postings WHERE entry_id = $1";
    let (id, org, rows): (i64, i64, Vec<PostingRow>) = on_tx!(tx, c => {
        let (id, org): (i64, i64) = sqlx::query_as(head).bind(key).fetch_one(&mut *c).await?;
        let rows = sqlx::query_as(postings).bind(id).fetch_all(c).await?;
        (id, org, rows)
    });
    let stored = rows.into_iter().map(NewPosting::try_from).collect::<Result<Vec<_>, _>>()?;
    if org == entry.header().org.0 && canonical(stored.into_iter()) == entry.canonical_postings() {
        Ok(Posted::Replayed(EntryId(id)))
    } else {
        Err(LedgerError::IdempotencyConflict(key.to_owned()))
    }
}

/// Posts `entry` in a transaction of its own, retrying transient conflicts.
pub async fn post_entry(db: &Db, entry: &NewEntry) -> Result<Posted, LedgerError> {
    let mut attempt = 0;
    loop {
        let result = async {
            let mut tx = db.begin().await?;
            let posted = post(&mut tx, entry).await?;
            tx.commit().await?;
            Ok::<_, LedgerError>(posted)
        }
        .await;
        match result {
            Err(LedgerError::Database(e)) if crate::db::is_transient(&e) && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5 << attempt)).await;
            }
            other => return other,
        }
    }
}

/// Posts the reversal of entry `original`: every posting negated, linked to
/// the original. An entry can be reversed once.
pub async fn reverse(tx: &mut Tx, original: EntryId, header: EntryHeader) -> Result<Posted, LedgerError> {
    let loaded = entry_in(tx, original).await?.ok_or(LedgerError::EntryNotFound(original))?;
    if loaded.org != header.org {
        return Err(LedgerError::EntryNotFound(original));
    }
    let reversal = NewEntry::reversal(header, original, &loaded.postings)?;
    post(tx, &reversal).await
}

async fn entry_in(tx: &mut Tx, id: EntryId) -> Result<Option<Entry>, LedgerError> {
    let (row, postings): (Option<EntryRow>, Vec<PostingRow>) = on_tx!(tx, c => {
        let row = sqlx::query_as(ENTRY_SQL).bind(id.0).fetch_optional(&mut *c).await?;
        let postings = sqlx::query_as(POSTINGS_SQL).bind(id.0).fetch_all(c).await?;
        (row, postings)
    });
    row.map(|r| assemble(r, postings)).transpose()
}

const ENTRY_SQL: &str = "SELECT id, org_id, idempotency_key, occurred_at, recorded_at, description,
    source_kind, source_ref, reverses_entry_id, recorded_by FROM ledger_entries WHERE id = $1";
const POSTINGS_SQL: &str = "SELECT account_id, amount, currency FROM ledger_postings WHERE entry_id = $1 ORDER BY id";

fn assemble(r: EntryRow, postings: Vec<PostingRow>) -> Result<Entry, LedgerError> {
    Ok(Entry {
        id: EntryId(r.id),
        org: OrgId(r.org_id),
        key: IdempotencyKey::parse(r.idempotency_key).map_err(|e| LedgerError::Corrupt(e.to_string()))?,
        occurred_at: r.occurred_at,
        recorded_at: r.recorded_at,
        description: r.description,
        source: match (r.source_kind, r.source_ref) {
            (Some(kind), Some(reference)) => Some(SourceRef { kind, reference }),
            _ => None,
        },
        reverses: r.reverses_entry_id.map(EntryId),
        recorded_by: r.recorded_by,
        postings: postings.into_iter().map(NewPosting::try_from).collect::<Result<_, _>>()?,
    })
}

/// One entry with its postings.
pub async fn entry(db: &Db, id: EntryId) -> Result<Option<Entry>, LedgerError> {
    let (row, postings): (Option<EntryRow>, Vec<PostingRow>) = on_db!(db, p => {
        let row = sqlx::query_as(ENTRY_SQL).bind(id.0).fetch_optional(p).await?;
        let postings = sqlx::query_as(POSTINGS_SQL).bind(id.0).fetch_all(p).await?;
        (row, postings)
    });
    row.map(|r| assemble(r, postings)).transpose()
}

/// Which entries a journal listing shows. Every bound is optional; the
/// organisation is not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalFilter {
    /// Occurred at or after.
    pub from: Option<Timestamp>,
    /// Occurred before.
    pub until: Option<Timestamp>,
    /// Only entries with a posting on this account.
    pub account: Option<AccountId>,
    /// Only entries whose source has this kind ("stripe", "pledge", "manual", …).
    pub source_kind: Option<String>,
    /// At most this many, newest first.
    pub limit: i64,
}

/// An organisation's journal, newest first, each entry with its postings.
/// Another organisation's entries never appear, whatever the filter names.
pub async fn journal(db: &Db, org: OrgId, filter: &JournalFilter) -> Result<Vec<Entry>, LedgerError> {
    let sql = "SELECT e.id, e.org_id, e.idempotency_key, e.occurred_at, e.recorded_at, e.description,
                      e.source_kind, e.source_ref, e.reverses_entry_id, e.recorded_by
               FROM ledger_entries e
               WHERE e.org_id = $1
                 AND ($2 IS NULL OR e.occurred_at >= $2)
                 AND ($3 IS NULL OR e.occurred_at < $3)
                 AND ($4 IS NULL OR EXISTS (SELECT 1 FROM ledger_postings p WHERE p.entry_id = e.id AND p.account_id = $4))
                 AND ($5 IS NULL OR e.source_kind = $5)
               ORDER BY e.occurred_at DESC, e.id DESC LIMIT $6";
    let limit = filter.limit.clamp(1, 1000);
    let account = filter.account.map(|a| a.0);
    let rows: Vec<EntryRow> = on_db!(db, p => sqlx::query_as(sql)
        .bind(org.0).bind(filter.from).bind(filter.until).bind(account)
        .bind(filter.source_kind.as_deref()).bind(limit).fetch_all(p).await?);
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let postings: Vec<PostingRow> = on_db!(db, p => sqlx::query_as(POSTINGS_SQL).bind(row.id).fetch_all(p).await?);
        entries.push(assemble(row, postings)?);
    }
    Ok(entries)
}

/// The entry that reversed `id`, if any.
pub async fn reversed_by(db: &Db, id: EntryId) -> Result<Option<EntryId>, LedgerError> {
    let sql = "SELECT id FROM ledger_entries WHERE reverses_entry_id = $1";
    let found: Option<i64> = on_db!(db, p => sqlx::query_scalar(sql).bind(id.0).fetch_optional(p).await?);
    Ok(found.map(EntryId))
}

// ---------------------------------------------------------------- check

/// What `kanpa ledger check` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub entries: i64,
    pub postings: i64,
    pub accounts: i64,
    /// Entries whose postings do not sum to zero: (entry, currency, sum).
    pub unbalanced_entries: Vec<(EntryId, String, i64)>,
    /// Entries with fewer than two postings.
    pub short_entries: Vec<EntryId>,
    /// Balance rows that differ from the sum of postings:
    /// (account, stored balance, summed, stored count, counted).
    pub balance_mismatches: Vec<(AccountId, i64, i64, i64, i64)>,
    /// Accounts with no balance row.
    pub missing_balances: Vec<AccountId>,
    /// Postings in a currency other than their account's, or on an account
    /// of another organisation than their entry's.
    pub misplaced_postings: Vec<i64>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.unbalanced_entries.is_empty()
            && self.short_entries.is_empty()
            && self.balance_mismatches.is_empty()
            && self.missing_balances.is_empty()
            && self.misplaced_postings.is_empty()
    }
}

/// Recomputes every balance from the postings and verifies every entry.
pub async fn check(db: &Db) -> Result<CheckReport, LedgerError> {
    let counts = "SELECT (SELECT COUNT(*) FROM ledger_entries), (SELECT COUNT(*) FROM ledger_postings),
                         (SELECT COUNT(*) FROM ledger_accounts)";
    let unbalanced = "SELECT entry_id, currency, CAST(SUM(amount) AS BIGINT) FROM ledger_postings
                      GROUP BY entry_id, currency HAVING SUM(amount) <> 0 ORDER BY entry_id";
    let short = "SELECT e.id FROM ledger_entries e LEFT JOIN ledger_postings p ON p.entry_id = e.id
                 GROUP BY e.id HAVING COUNT(p.id) < 2 ORDER BY e.id";
    let mismatches = "SELECT b.account_id, b.balance, CAST(COALESCE(s.total, 0) AS BIGINT),
                             b.n_postings, CAST(COALESCE(s.n, 0) AS BIGINT)
                      FROM (SELECT account_id, CAST(SUM(balance) AS BIGINT) AS balance,
                                   CAST(SUM(n_postings) AS BIGINT) AS n_postings
                            FROM ledger_balances GROUP BY account_id) b
                      LEFT JOIN (SELECT account_id, SUM(amount) AS total, COUNT(*) AS n
                                 FROM ledger_postings GROUP BY account_id) s
                        ON s.account_id = b.account_id
                      WHERE b.balance <> COALESCE(s.total, 0) OR b.n_postings <> COALESCE(s.n, 0)
                      ORDER BY b.account_id";
    let missing = "SELECT a.id FROM ledger_accounts a
                   WHERE NOT EXISTS (SELECT 1 FROM ledger_balances b WHERE b.account_id = a.id) ORDER BY a.id";
    let misplaced = "SELECT p.id FROM ledger_postings p
                     JOIN ledger_accounts a ON a.id = p.account_id
                     JOIN ledger_entries e ON e.id = p.entry_id
                     WHERE p.currency <> a.currency OR a.org_id <> e.org_id ORDER BY p.id";
    on_db!(db, p => {
        let (entries, postings, accounts): (i64, i64, i64) =
            sqlx::query_as(counts).fetch_one(p).await?;
        let unbalanced_entries: Vec<(i64, String, i64)> = sqlx::query_as(unbalanced).fetch_all(p).await?;
        let short_entries: Vec<i64> = sqlx::query_scalar(short).fetch_all(p).await?;
        let balance_mismatches: Vec<(i64, i64, i64, i64, i64)> =
            sqlx::query_as(mismatches).fetch_all(p).await?;
        let missing_balances: Vec<i64> = sqlx::query_scalar(missing).fetch_all(p).await?;
        let misplaced_postings: Vec<i64> = sqlx::query_scalar(misplaced).fetch_all(p).await?;
        Ok(CheckReport {
            entries,
            postings,
            accounts,
            unbalanced_entries: unbalanced_entries.into_iter().map(|(e, c, s)| (EntryId(e), c, s)).collect(),
            short_entries: short_entries.into_iter().map(EntryId).collect(),
            balance_mismatches: balance_mismatches
                .into_iter()
                .map(|(a, b, s, n, c)| (AccountId(a), b, s, n, c))
                .collect(),
            missing_balances: missing_balances.into_iter().map(AccountId).collect(),
            misplaced_postings,
        })
    })
}

// ---------------------------------------------------------------- exports

/// A value bound to an export query.
enum Param {
    Int(i64),
    Time(Timestamp),
}

/// Every account of one organisation (or all), with its organisation's slug,
/// for naming in exports.
pub async fn export_accounts(db: &Db, org: Option<OrgId>) -> Result<Vec<crate::export::ExportAccount>, LedgerError> {
    let mut sql = String::from(
        "SELECT a.id, a.org_id, o.slug, a.code, a.name, a.kind, a.currency
         FROM ledger_accounts a JOIN organisations o ON o.id = a.org_id",
    );
    if org.is_some() {
        sql.push_str(" WHERE a.org_id = $1");
    }
    sql.push_str(" ORDER BY o.slug, a.code");
    type Row = (i64, i64, String, String, String, String, String);
    let rows: Vec<Row> = on_db!(db, p => {
        let mut q = sqlx::query_as(AssertSqlSafe(sql.clone()));
        if let Some(org) = org {
            q = q.bind(org.0);
        }
        q.fetch_all(p).await?
    });
    rows.into_iter()
        .map(|(id, org_id, org_slug, code, name, kind, currency_code)| {
            Ok(crate::export::ExportAccount {
                id: AccountId(id),
                org: OrgId(org_id),
                org_slug,
                kind: AccountKind::parse(&kind).ok_or_else(|| LedgerError::Corrupt(kind.clone()))?,
                currency: currency(&currency_code)?,
                code,
                name,
                plain_name: String::new(),
            })
        })
        .collect()
}

fn scope_filter(scope: &crate::export::Scope, params: &mut Vec<Param>, sql: &mut String) {
    if let Some(org) = scope.org {
        params.push(Param::Int(org.0));
        sql.push_str(&format!(" AND e.org_id = ${}", params.len()));
    }
    if let Some(funds) = &scope.funds {
        if funds.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            let mut list = Vec::new();
            for fund in funds {
                params.push(Param::Int(fund.0));
                list.push(format!("${}", params.len()));
            }
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM ledger_postings f WHERE f.entry_id = e.id AND f.account_id IN ({}))",
                list.join(", ")
            ));
        }
    }
}

/// The entries in scope and period with their postings, in date then entry
/// order, streamed from the database one row per entry: the postings come
/// aggregated in posting order into one text cell (see
/// [`crate::export::JournalEntryRow`]), so the entry's own columns cross
/// from the database once rather than once per posting.
pub fn journal_entries<'a>(
    db: &'a Db,
    scope: &crate::export::Scope,
    period: &crate::export::Period,
) -> futures::stream::BoxStream<'a, Result<crate::export::JournalEntryRow, LedgerError>> {
    use futures::StreamExt;
    // SQLite's group_concat and PostgreSQL's string_agg, both ordered.
    let aggregate = match db.backend() {
        crate::Backend::Sqlite => {
            "group_concat(p.account_id || ' ' || p.amount || ' ' || p.currency, ',' ORDER BY p.id)"
        }
        crate::Backend::Postgres => {
            "string_agg(p.account_id || ' ' || p.amount || ' ' || p.currency, ',' ORDER BY p.id)"
        }
    };
    let mut sql = format!(
        "SELECT e.id AS entry_id, e.org_id, e.occurred_at, e.description, e.idempotency_key, e.source_kind,
                e.source_ref, e.recorded_by,
                (SELECT {aggregate} FROM ledger_postings p WHERE p.entry_id = e.id) AS postings
         FROM ledger_entries e WHERE 1 = 1"
    );
    let mut params = Vec::new();
    scope_filter(scope, &mut params, &mut sql);
    if let Some(start) = period.start() {
        params.push(Param::Time(start));
        sql.push_str(&format!(" AND e.occurred_at >= ${}", params.len()));
    }
    if let Some(end) = period.end() {
        params.push(Param::Time(end));
        sql.push_str(&format!(" AND e.occurred_at < ${}", params.len()));
    }
    sql.push_str(" ORDER BY e.occurred_at, e.id");
    let stream = on_db!(db, p => {
        let mut q = sqlx::query_as::<_, crate::export::JournalEntryRow>(AssertSqlSafe(sql));
        for param in params {
            q = match param {
                Param::Int(v) => q.bind(v),
                Param::Time(v) => q.bind(v),
            };
        }
        q.fetch(p)
    });
    stream.map(|row| row.map_err(LedgerError::Database)).boxed()
}

/// Each fund's balance (debit-positive) from entries before `start`: the
/// opening balance of a fund ledger.
pub async fn balances_before(
    db: &Db,
    scope: &crate::export::Scope,
    start: Timestamp,
) -> Result<BTreeMap<AccountId, i64>, LedgerError> {
    let mut params = vec![Param::Time(start)];
    let mut sql = String::from(
        "SELECT p.account_id, CAST(SUM(p.amount) AS BIGINT) FROM ledger_postings p
         JOIN ledger_entries e ON e.id = p.entry_id JOIN ledger_accounts a ON a.id = p.account_id
         WHERE a.kind = 'fund' AND e.occurred_at < $1",
    );
    if let Some(org) = scope.org {
        params.push(Param::Int(org.0));
        sql.push_str(&format!(" AND e.org_id = ${}", params.len()));
    }
    sql.push_str(" GROUP BY p.account_id");
    let rows: Vec<(i64, i64)> = on_db!(db, p => {
        let mut q = sqlx::query_as(AssertSqlSafe(sql.clone()));
        for param in &params {
            q = match param {
                Param::Int(v) => q.bind(*v),
                Param::Time(v) => q.bind(*v),
            };
        }
        q.fetch_all(p).await?
    });
    Ok(rows
        .into_iter()
        .map(|(a, b)| (AccountId(a), b))
        .filter(|(a, _)| scope.funds.as_ref().is_none_or(|f| f.contains(a)))
        .collect())
}

/// The accounts with this code: in one organisation, or in every one.
pub async fn accounts_with_code(db: &Db, org: Option<OrgId>, code: &str) -> Result<Vec<Account>, LedgerError> {
    let sql = "SELECT id, org_id, code, name, kind, currency FROM ledger_accounts
               WHERE code = $1 AND (org_id = $2 OR $3) ORDER BY org_id";
    let rows: Vec<AccountRow> = on_db!(db, p => sqlx::query_as(sql)
        .bind(code).bind(org.map_or(0, |o| o.0)).bind(org.is_none()).fetch_all(p).await?);
    rows.into_iter().map(Account::try_from).collect()
}

// ---------------------------------------------------------------- reconciliation

/// Per provider object (`stripe:{object}:…` keys), what its entries did to
/// the organisations' Stripe balance accounts (`stripe-balance:*`), read as
/// a stream: one value per object.
pub async fn provider_objects(
    db: &Db,
    org: Option<OrgId>,
) -> Result<BTreeMap<String, crate::reconcile::LedgerSide>, LedgerError> {
    use futures::TryStreamExt;
    let mut sql = String::from(
        "SELECT e.idempotency_key, e.org_id, e.occurred_at, p.amount, p.currency
         FROM ledger_entries e JOIN ledger_postings p ON p.entry_id = e.id
         JOIN ledger_accounts a ON a.id = p.account_id
         WHERE e.idempotency_key LIKE 'stripe:%' AND a.code LIKE 'stripe-balance:%'",
    );
    if org.is_some() {
        sql.push_str(" AND e.org_id = $1");
    }
    let mut sides: BTreeMap<String, crate::reconcile::LedgerSide> = BTreeMap::new();
    on_db!(db, p => {
        let mut q = sqlx::query_as::<_, (String, i64, Timestamp, i64, String)>(AssertSqlSafe(sql));
        if let Some(org) = org {
            q = q.bind(org.0);
        }
        let mut rows = q.fetch(p);
        while let Some((key, org_id, at, amount, code)) = rows.try_next().await? {
            let Some(object) = crate::reconcile::object_of_key(&key) else { continue };
            let side = sides.entry(object.to_owned()).or_insert(crate::reconcile::LedgerSide {
                org: OrgId(org_id),
                currency: currency(&code)?,
                amount: 0,
                last_at: at,
            });
            side.amount += amount;
            side.last_at = side.last_at.max(at);
        }
    });
    Ok(sides)
}

/// The entry posted with this idempotency key, if any.
pub async fn entry_by_key(db: &Db, key: &str) -> Result<Option<Entry>, LedgerError> {
    let sql = "SELECT id FROM ledger_entries WHERE idempotency_key = $1";
    let id: Option<i64> = on_db!(db, p => sqlx::query_scalar(sql).bind(key).fetch_optional(p).await?);
    match id {
        Some(id) => entry(db, EntryId(id)).await,
        None => Ok(None),
    }
}

/// Payouts of an organisation on their way to the bank: entries keyed
/// `stripe:{payout}:in-transit:{org}` with no `stripe:{payout}:banked:{org}`
/// yet, with what they put in transit.
pub async fn payouts_in_transit(db: &Db, org: OrgId) -> Result<Vec<(String, Money, Timestamp)>, LedgerError> {
    let sql = "SELECT e.idempotency_key, p.amount, p.currency, e.occurred_at
               FROM ledger_entries e JOIN ledger_postings p ON p.entry_id = e.id
               JOIN ledger_accounts a ON a.id = p.account_id
               WHERE e.org_id = $1 AND e.idempotency_key LIKE $2 AND a.code LIKE 'in-transit:%' AND p.amount > 0
               ORDER BY e.occurred_at, e.id";
    let banked_sql = "SELECT idempotency_key FROM ledger_entries WHERE org_id = $1 AND idempotency_key LIKE $2";
    let suffix = format!(":in-transit:{}", org.0);
    let banked_suffix = format!(":banked:{}", org.0);
    type InTransitRow = (String, i64, String, Timestamp);
    let (rows, banked): (Vec<InTransitRow>, Vec<String>) = on_db!(db, p => {
        let rows = sqlx::query_as(sql).bind(org.0).bind(format!("stripe:%{suffix}")).fetch_all(p).await?;
        let banked = sqlx::query_scalar(banked_sql).bind(org.0).bind(format!("stripe:%{banked_suffix}")).fetch_all(p).await?;
        (rows, banked)
    });
    let banked: std::collections::HashSet<String> = banked
        .iter()
        .filter_map(|k| k.strip_prefix("stripe:")?.strip_suffix(&banked_suffix).map(str::to_owned))
        .collect();
    rows.into_iter()
        .filter_map(|(key, amount, code, at)| {
            let payout = key.strip_prefix("stripe:")?.strip_suffix(&suffix)?.to_owned();
            (!banked.contains(&payout)).then(|| currency(&code).map(|c| (payout, Money::new(amount, c), at)))
        })
        .collect()
}

/// Arms the scheduled reconciliation if nothing has: true if this call did
/// (the caller then queues the first run in the same transaction).
pub async fn arm_reconciliation(tx: &mut Tx, next_run_at: Timestamp) -> Result<bool, LedgerError> {
    let sql = "INSERT INTO reconciliation_schedule (id, next_run_at) VALUES (1, $1)
               ON CONFLICT (id) DO NOTHING RETURNING id";
    let armed: Option<i64> = on_tx!(tx, c => sqlx::query_scalar(sql).bind(next_run_at).fetch_optional(c).await?);
    Ok(armed.is_some())
}

/// Records a run and when the next is due.
pub async fn record_reconciliation(
    tx: &mut Tx,
    ran_at: Timestamp,
    next_run_at: Timestamp,
    unmatched: i64,
) -> Result<(), LedgerError> {
    let sql =
        "INSERT INTO reconciliation_schedule (id, next_run_at, last_run_at, last_unmatched) VALUES (1, $1, $2, $3)
               ON CONFLICT (id) DO UPDATE SET next_run_at = excluded.next_run_at,
                   last_run_at = excluded.last_run_at, last_unmatched = excluded.last_unmatched";
    on_tx!(tx, c => sqlx::query(sql).bind(next_run_at).bind(ran_at).bind(unmatched).execute(c).await?.rows_affected());
    Ok(())
}

/// Disarms it (its job gave up), so the next start arms it again.
pub async fn disarm_reconciliation(tx: &mut Tx) -> Result<(), LedgerError> {
    on_tx!(tx, c => sqlx::query("DELETE FROM reconciliation_schedule").execute(c).await?.rows_affected());
    Ok(())
}

/// Keeps `run` as the organisation's last reconciliation (replacing the one
/// before).
pub async fn save_reconciliation_report(
    db: &Db,
    org: OrgId,
    run: &crate::reconcile::LastRun,
) -> Result<(), LedgerError> {
    let json = serde_json::json!({ "report": run.report, "balances": run.balances }).to_string();
    let sql = "INSERT INTO reconciliation_reports (org_id, ran_at, source, report) VALUES ($1, $2, $3, $4)
               ON CONFLICT (org_id) DO UPDATE SET ran_at = excluded.ran_at, source = excluded.source,
                   report = excluded.report";
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, c => sqlx::query(sql).bind(org.0).bind(run.ran_at).bind(&run.source).bind(&json)
        .execute(c).await?.rows_affected());
    tx.commit().await?;
    Ok(())
}

/// The organisation's last reconciliation, if one ran.
pub async fn reconciliation_report(db: &Db, org: OrgId) -> Result<Option<crate::reconcile::LastRun>, LedgerError> {
    #[derive(serde::Deserialize)]
    struct Stored {
        report: crate::reconcile::Report,
        balances: Option<Vec<crate::reconcile::BalanceCheck>>,
    }
    let sql = "SELECT ran_at, source, report FROM reconciliation_reports WHERE org_id = $1";
    let row: Option<(Timestamp, String, String)> =
        on_db!(db, p => sqlx::query_as(sql).bind(org.0).fetch_optional(p).await?);
    row.map(|(ran_at, source, json)| {
        let stored: Stored = serde_json::from_str(&json).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        Ok(crate::reconcile::LastRun { ran_at, source, report: stored.report, balances: stored.balances })
    })
    .transpose()
}

/// The last scheduled run: when, and how many objects were unmatched.
pub async fn last_reconciliation(db: &Db) -> Result<Option<(Timestamp, i64)>, LedgerError> {
    let sql = "SELECT last_run_at, last_unmatched FROM reconciliation_schedule
               WHERE last_run_at IS NOT NULL AND last_unmatched IS NOT NULL";
    let row: Option<(Timestamp, i64)> = on_db!(db, p => sqlx::query_as(sql).fetch_optional(p).await?);
    Ok(row)
}
