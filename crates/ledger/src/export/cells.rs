//! Spreadsheet-safe CSV cells.
//!
//! A spreadsheet runs a cell that begins with `=`, `+`, `-` or `@` as a
//! formula (and a leading tab or carriage return can smuggle one in), so a
//! supporter's message such as `=HYPERLINK(...)` must not reach Excel as
//! written. [`neutralise`] puts an apostrophe in front of such a cell, which
//! spreadsheets treat as "text follows" and do not display. A cell that
//! itself begins with an apostrophe gets one too, so that [`restore`] —
//! strip one leading apostrophe, if any — gives back exactly the original
//! text of every cell: the defusing round-trips.

use std::borrow::Cow;

/// The characters that make a spreadsheet cell dangerous when first, plus the
/// apostrophe itself (so that restoring is unambiguous).
const TRIGGERS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\''];

/// The text with an apostrophe in front if it begins with `=`, `+`, `-`, `@`,
/// a tab, a carriage return or an apostrophe.
pub fn neutralise(text: &str) -> Cow<'_, str> {
    if text.starts_with(TRIGGERS) { Cow::Owned(format!("'{text}")) } else { Cow::Borrowed(text) }
}

/// The original text of a cell written by [`neutralise`].
pub fn restore(cell: &str) -> &str {
    cell.strip_prefix('\'').filter(|rest| rest.starts_with(TRIGGERS)).unwrap_or(cell)
}

/// Appends one quoted CSV field (RFC 4180: quotes doubled) holding the
/// neutralised text.
pub fn push_text(line: &mut String, text: &str) {
    line.push('"');
    for c in neutralise(text).chars() {
        if c == '"' {
            line.push('"');
        }
        line.push(c);
    }
    line.push('"');
}

/// A CSV line builder: text cells are quoted and neutralised, numbers are
/// written bare (they are ours and never negative where a spreadsheet could
/// read them as a formula).
#[derive(Default)]
pub struct Line {
    text: String,
    started: bool,
}

impl Line {
    pub fn new() -> Line {
        Line::default()
    }

    fn separate(&mut self) {
        if self.started {
            self.text.push(',');
        }
        self.started = true;
    }

    pub fn text(&mut self, value: &str) -> &mut Line {
        self.separate();
        push_text(&mut self.text, value);
        self
    }

    /// A cell we produce ourselves that never starts with a trigger
    /// (a number, a date): written unquoted.
    pub fn plain(&mut self, value: &str) -> &mut Line {
        self.separate();
        debug_assert!(!value.starts_with(TRIGGERS), "plain cell {value:?} would need neutralising");
        if value.contains([',', '"', '\n', '\r']) {
            push_text(&mut self.text, value);
        } else {
            self.text.push_str(value);
        }
        self
    }

    /// The line with its CRLF ending.
    pub fn finish(&mut self) -> String {
        self.text.push_str("\r\n");
        self.started = false;
        std::mem::take(&mut self.text)
    }
}

/// Reads RFC 4180 CSV (quoted fields, doubled quotes, CRLF or LF lines)
/// into records of raw cells; a leading byte-order mark is skipped. Cells
/// come back as written: [`restore`] gives the original text of a
/// neutralised one.
pub fn read_records(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut cell = String::new();
    let mut chars = text.strip_prefix('\u{feff}').unwrap_or(text).chars().peekable();
    let mut quoted = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                other => cell.push(other),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => record.push(std::mem::take(&mut cell)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut cell));
                records.push(std::mem::take(&mut record));
                any = false;
            }
            other => cell.push(other),
        }
    }
    if any {
        record.push(cell);
        records.push(record);
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formula_payloads_are_defused_and_come_back_unchanged() {
        for payload in
            ["=HYPERLINK(\"http://evil.example\",\"x\")", "@SUM(1)", "-1+1", "+81 3", "\tlead", "\rcr", "'quoted"]
        {
            let cell = neutralise(payload);
            assert!(cell.starts_with('\''), "{payload:?} -> {cell:?}");
            assert_eq!(restore(&cell), payload);
        }
        assert_eq!(neutralise("山田 花子"), "山田 花子");
        assert_eq!(restore("plain"), "plain");
    }

    #[test]
    fn fields_are_quoted_with_quotes_doubled() {
        let line = Line::new().text("a\"b").plain("100").text("=1").finish();
        assert_eq!(line, "\"a\"\"b\",100,\"'=1\"\r\n");
    }

    #[test]
    fn records_read_back_as_written() {
        let text = "\u{feff}\"a,b\",1\r\n\"x\"\"y\",\"'=1\"\n";
        assert_eq!(read_records(text), vec![vec!["a,b".to_owned(), "1".into()], vec!["x\"y".into(), "'=1".into()]]);
    }

    proptest! {
        #[test]
        fn every_text_round_trips(text in ".*") {
            let cell = neutralise(&text);
            prop_assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']));
            prop_assert_eq!(restore(&cell), text.as_str());
        }
    }
}
