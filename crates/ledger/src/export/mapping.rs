//! Which account of the organisation's own chart (freee, Money Forward,
//! Yayoi) a kanpa account lands in.
//!
//! Rules map a kanpa account code, or a code prefix ending in `*`, to an
//! account name, an optional sub-account (補助科目) and a tax class
//! (税区分). The most specific rule wins: an exact code, then the longest
//! prefix. Accounts no rule names fall back to [`Mapping::default_for`].

use serde::{Deserialize, Serialize};

use crate::account::AccountKind;

/// An account in the accounting product's chart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedAccount {
    /// 勘定科目, e.g. "普通預金".
    pub account: String,
    /// 補助科目, e.g. "Stripe"; empty for none.
    #[serde(default)]
    pub sub: String,
    /// 税区分, e.g. "対象外"; empty means "対象外".
    #[serde(default)]
    pub tax: String,
}

impl MappedAccount {
    fn new(account: &str, sub: &str) -> MappedAccount {
        MappedAccount { account: account.to_owned(), sub: sub.to_owned(), tax: String::new() }
    }

    /// The tax class to write: the rule's, or 対象外 (outside consumption
    /// tax: donations and transfers of money held).
    pub fn tax_class(&self) -> &str {
        if self.tax.is_empty() { "対象外" } else { &self.tax }
    }
}

/// A set of rules from kanpa account codes to the organisation's chart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    exact: Vec<(String, MappedAccount)>,
    prefixes: Vec<(String, MappedAccount)>,
}

impl Mapping {
    /// Rules as `(pattern, account)`: `"bank:JPY"` matches that code only,
    /// `"fund:drive-2026:*"` every code starting with `fund:drive-2026:`.
    /// Later rules for the same pattern replace earlier ones, so a more
    /// specific layer (an organisation's) can be added after a general one.
    pub fn new(rules: impl IntoIterator<Item = (String, MappedAccount)>) -> Mapping {
        let mut mapping = Mapping::default();
        for (pattern, account) in rules {
            let (list, key) = match pattern.strip_suffix('*') {
                Some(prefix) => (&mut mapping.prefixes, prefix.to_owned()),
                None => (&mut mapping.exact, pattern),
            };
            list.retain(|(k, _)| *k != key);
            list.push((key, account));
        }
        // Longest prefix first.
        mapping.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        mapping
    }

    pub fn resolve(&self, code: &str, name: &str, kind: AccountKind) -> MappedAccount {
        if let Some((_, account)) = self.exact.iter().find(|(k, _)| k == code) {
            return account.clone();
        }
        if let Some((_, account)) = self.prefixes.iter().find(|(k, _)| code.starts_with(k.as_str())) {
            return account.clone();
        }
        Mapping::default_for(code, name, kind)
    }

    /// Without a rule: money at Stripe is 預け金/Stripe, on its way to the
    /// bank 未収入金/Stripe, the bank 普通預金, the cash box 現金; a fund is
    /// 売上高 with the fund's name as sub-account; other income 雑収入,
    /// expenses 支払手数料, liabilities 預り金, other assets 未収入金.
    pub fn default_for(code: &str, name: &str, kind: AccountKind) -> MappedAccount {
        let holding = code.split(':').next().unwrap_or_default();
        match (kind, holding) {
            (AccountKind::Asset, "stripe-balance") => MappedAccount::new("預け金", "Stripe"),
            (AccountKind::Asset, "in-transit") => MappedAccount::new("未収入金", "Stripe"),
            (AccountKind::Asset, "bank") => MappedAccount::new("普通預金", ""),
            (AccountKind::Asset, "cash") => MappedAccount::new("現金", ""),
            (AccountKind::Asset, _) => MappedAccount::new("未収入金", name),
            (AccountKind::Fund, _) => MappedAccount::new("売上高", name),
            (AccountKind::Income, _) => MappedAccount::new("雑収入", name),
            (AccountKind::Expense, _) => MappedAccount::new("支払手数料", name),
            (AccountKind::Liability, _) => MappedAccount::new("預り金", name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_prefix_and_longer_prefix_beats_shorter() {
        let m = Mapping::new([
            ("fund:*".to_owned(), MappedAccount::new("寄付金収入", "")),
            ("fund:drive:*".to_owned(), MappedAccount::new("受取寄付金", "drive")),
            ("fund:drive:nurses".to_owned(), MappedAccount::new("受取寄付金", "看護師")),
        ]);
        assert_eq!(m.resolve("fund:drive:nurses", "n", AccountKind::Fund).sub, "看護師");
        assert_eq!(m.resolve("fund:drive:doctors", "d", AccountKind::Fund).sub, "drive");
        assert_eq!(m.resolve("fund:salon:x", "x", AccountKind::Fund).account, "寄付金収入");
        assert_eq!(m.resolve("stripe-balance:JPY", "s", AccountKind::Asset), MappedAccount::new("預け金", "Stripe"));
        assert_eq!(m.resolve("bank:JPY", "b", AccountKind::Asset).tax_class(), "対象外");
    }
}
