//! Sharing the unallocated pool among the teams.
//!
//! The rule is the campaign's: `equal`, `pro_rata` to the teams' sub-goals,
//! or `manual` by the weights the organiser set on each team. Every rule is
//! a weighted split by largest remainders, so the shares always add up to
//! the pool exactly, to the yen.

use kanpa_ledger::store as ledger;
use kanpa_ledger::{EntryHeader, IdempotencyKey, Money, NewEntry, NewPosting, OrgId, SourceRef, Timestamp, Tx, on_tx};
use kanpa_payments::Collected;

use crate::error::CampaignError;
use crate::model::{Campaign, PoolRule, Team};
use crate::store;

/// Splits `total` in proportion to `weights` by largest remainders; ties go
/// to the earlier team. With no positive weight, splits equally.
pub fn split(total: i64, weights: &[i64]) -> Vec<i64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let weights: Vec<i128> = if weights.iter().all(|w| *w <= 0) {
        vec![1; weights.len()]
    } else {
        weights.iter().map(|w| i128::from((*w).max(0))).collect()
    };
    let sum: i128 = weights.iter().sum();
    let total = i128::from(total);
    let mut shares: Vec<i128> = weights.iter().map(|w| total * w / sum).collect();
    let mut remainders: Vec<(i128, usize)> = weights.iter().enumerate().map(|(i, w)| (total * w % sum, i)).collect();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let left = total - shares.iter().sum::<i128>();
    for (_, i) in remainders.into_iter().take(left as usize) {
        shares[i] += 1;
    }
    shares.into_iter().map(|s| s as i64).collect()
}

/// Each team's weight under a rule.
pub fn weights(rule: PoolRule, teams: &[Team]) -> Vec<i64> {
    teams
        .iter()
        .map(|t| match rule {
            PoolRule::Equal => 1,
            PoolRule::ProRata => t.goal,
            PoolRule::Manual => t.pool_weight,
        })
        .collect()
}

/// The pool's balance as people read it (a fund holds a credit balance).
async fn pool_balance(tx: &mut Tx, campaign: &Campaign) -> Result<i64, CampaignError> {
    let sql = "SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM ledger_balances WHERE account_id = $1";
    let balance: i64 = on_tx!(tx, c => sqlx::query_scalar(sql).bind(campaign.pool_account.0).fetch_one(c).await?);
    Ok(-balance)
}

/// Moves `amount` out of the pool into the teams' funds by the campaign's
/// rule, as one entry under `key`. Returns each team's share.
async fn share(tx: &mut Tx, campaign: &Campaign, amount: i64, key: String) -> Result<Vec<(i64, Money)>, CampaignError> {
    let teams = store::teams_in(tx, campaign.id).await?;
    if amount <= 0 || teams.is_empty() {
        return Ok(Vec::new());
    }
    let shares = split(amount, &weights(campaign.pool_rule, &teams));
    let mut postings = vec![NewPosting::debit(campaign.pool_account, campaign.money(amount))];
    let mut result = Vec::new();
    for (team, share) in teams.iter().zip(shares) {
        if share > 0 {
            postings.push(NewPosting::credit(team.account, campaign.money(share))?);
            result.push((team.id, campaign.money(share)));
        }
    }
    let header = EntryHeader {
        org: OrgId(campaign.org_id),
        key: IdempotencyKey::parse(key).map_err(|e| CampaignError::Ledger(e.into()))?,
        occurred_at: Timestamp::now(),
        description: format!("Pool shared among teams ({}) — {}", campaign.pool_rule, campaign.slug),
        source: Some(SourceRef { kind: "campaign".into(), reference: campaign.slug.clone() }),
        recorded_by: Some("system".into()),
    };
    ledger::post(tx, &NewEntry::new(header, postings)?).await?;
    Ok(result)
}

/// Shares everything in the pool now (at settlement). The campaign row must
/// be locked by the caller, so no collection lands in the pool unseen.
pub(crate) async fn share_pool(tx: &mut Tx, campaign: &Campaign) -> Result<Vec<(i64, Money)>, CampaignError> {
    let amount = pool_balance(tx, campaign).await?;
    if amount <= 0 {
        return Ok(Vec::new());
    }
    let sql = "UPDATE campaign_settlements SET pool_splits = pool_splits + 1 WHERE campaign_id = $1
               RETURNING pool_splits";
    let n: i32 = on_tx!(tx, c => sqlx::query_scalar(sql).bind(campaign.id).fetch_one(c).await?);
    share(tx, campaign, amount, format!("campaign:{}:pool-split:{n}", campaign.id)).await
}

/// Pool money collected after the campaign settled (a late payment) is
/// shared at once, net of its fee.
pub(crate) async fn share_late_collection(
    tx: &mut Tx,
    campaign: &Campaign,
    collected: &Collected,
) -> Result<(), CampaignError> {
    let net = collected.gross.amount() - collected.fee.amount();
    share(tx, campaign, net, format!("stripe:{}:pool-split", collected.charge)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_pool() {
        assert_eq!(split(100, &[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(split(1_000_001, &[1; 7]).iter().sum::<i64>(), 1_000_001);
        assert_eq!(split(1000, &[300, 100]), vec![750, 250]);
        assert_eq!(split(10, &[0, 0]), vec![5, 5]);
        assert_eq!(split(7, &[2, 0, 1]), vec![5, 0, 2]);
        assert_eq!(split(0, &[1, 2]), vec![0, 0]);
        assert!(split(5, &[]).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_split_is_exact(total in 0i64..10_000_000_000, weights in proptest::collection::vec(0i64..1_000_000, 1..12)) {
            let shares = split(total, &weights);
            proptest::prop_assert_eq!(shares.iter().sum::<i64>(), total);
            proptest::prop_assert!(shares.iter().all(|s| *s >= 0));
        }
    }
}
