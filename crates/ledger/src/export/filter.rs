//! The `WHERE` of a row export outside the ledger (pledges, patrons): the
//! requester's scope — an organisation, fund accounts, a period — as SQL
//! with numbered parameters, bound in order by the caller.

use std::collections::BTreeSet;

use super::Period;
use crate::{AccountId, OrgId, Timestamp};

/// A parameter of a [`RowFilter`], in the order of its `$n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterParam {
    Int(i64),
    Time(Timestamp),
}

/// A `SELECT … WHERE 1 = 1` narrowed condition by condition.
#[derive(Debug)]
pub struct RowFilter {
    sql: String,
    params: Vec<FilterParam>,
}

impl RowFilter {
    /// `select` is everything before the `WHERE`.
    pub fn new(select: &str) -> RowFilter {
        RowFilter { sql: format!("{select} WHERE 1 = 1"), params: Vec::new() }
    }

    fn param(&mut self, value: FilterParam) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// Only rows of `org` in `column`, if given.
    pub fn org(mut self, column: &str, org: Option<OrgId>) -> RowFilter {
        if let Some(org) = org {
            let p = self.param(FilterParam::Int(org.0));
            self.sql.push_str(&format!(" AND {column} = {p}"));
        }
        self
    }

    /// Only rows whose fund account (`column`) is one of `funds`, if given;
    /// an empty set matches nothing.
    pub fn funds(mut self, column: &str, funds: Option<&BTreeSet<AccountId>>) -> RowFilter {
        if let Some(funds) = funds {
            let mut list = vec!["NULL".to_owned()];
            for fund in funds {
                list.push(self.param(FilterParam::Int(fund.0)));
            }
            self.sql.push_str(&format!(" AND {column} IN ({})", list.join(", ")));
        }
        self
    }

    /// Only rows whose time (`column`) falls in `period`.
    pub fn period(mut self, column: &str, period: &Period) -> RowFilter {
        if let Some(start) = period.start() {
            let p = self.param(FilterParam::Time(start));
            self.sql.push_str(&format!(" AND {column} >= {p}"));
        }
        if let Some(end) = period.end() {
            let p = self.param(FilterParam::Time(end));
            self.sql.push_str(&format!(" AND {column} < {p}"));
        }
        self
    }

    /// The statement, ordered by `column`, and its parameters in order.
    pub fn order_by(mut self, column: &str) -> (String, Vec<FilterParam>) {
        self.sql.push_str(&format!(" ORDER BY {column}"));
        (self.sql, self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_condition_numbers_its_parameters_in_order() {
        let funds: BTreeSet<AccountId> = [AccountId(7), AccountId(9)].into();
        let period = Period { from: Period::parse_date("2026-11-01"), to: Period::parse_date("2026-11-30") };
        let (sql, params) = RowFilter::new("SELECT x FROM t")
            .org("t.org_id", Some(OrgId(3)))
            .funds("t.fund", Some(&funds))
            .period("t.at", &period)
            .order_by("t.id");
        assert_eq!(
            sql,
            "SELECT x FROM t WHERE 1 = 1 AND t.org_id = $1 AND t.fund IN (NULL, $2, $3) \
             AND t.at >= $4 AND t.at < $5 ORDER BY t.id"
        );
        assert_eq!(&params[..3], &[FilterParam::Int(3), FilterParam::Int(7), FilterParam::Int(9)]);
        assert_eq!(params[3], FilterParam::Time(period.start().unwrap()));
        assert_eq!(params[4], FilterParam::Time(period.end().unwrap()));
        // Nothing asked, nothing narrowed; no fund at all matches nothing.
        let (sql, params) = RowFilter::new("SELECT x FROM t").org("o", None).funds("f", None).order_by("id");
        assert_eq!((sql.as_str(), params.len()), ("SELECT x FROM t WHERE 1 = 1 ORDER BY id", 0));
        let (sql, _) = RowFilter::new("SELECT x FROM t").funds("f", Some(&BTreeSet::new())).order_by("id");
        assert!(sql.contains("f IN (NULL)"));
    }
}
