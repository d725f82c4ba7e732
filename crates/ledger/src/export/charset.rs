//! The text encoding of an export file.
//!
//! Every export is UTF-8 except Yayoi Kaikei's journal import, which Yayoi
//! reads as Shift_JIS — in practice Microsoft's code page 932 (Windows-31J),
//! the variant Windows and Yayoi use, with NEC and IBM extensions such as
//! `①` and `髙`. That is what [`encoding_rs::SHIFT_JIS`] encodes.
//!
//! The rule for text CP932 cannot hold (emoji, most characters outside JIS
//! X 0208 and the extensions, such as `𠮷`): each such character is written as
//! [`REPLACEMENT`], `〓` (the geta mark Japanese typesetting uses for a
//! character that cannot be printed), one for one. Nothing is dropped, so the
//! reader sees that something stood there, and no HTML character reference
//! (`&#128514;`) ever reaches an accountant's books. Six characters that JIS
//! and macOS write at another code point than CP932 (the wave dash `〜`, `‖`,
//! `—`, `¢`, `£`, `¬`) are written as CP932's own form of the same character
//! (`～`, `∥`, `―`, `￠`, `￡`, `￢`), not replaced.

use encoding_rs::EncoderResult;

/// The character written in place of one CP932 cannot hold.
pub const REPLACEMENT: char = '〓';

/// How an export file's text is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charset {
    Utf8,
    /// Shift_JIS as Windows writes it (CP932).
    ShiftJis,
}

impl Charset {
    /// The name in a Content-Type header.
    pub fn mime_name(self) -> &'static str {
        match self {
            Charset::Utf8 => "utf-8",
            Charset::ShiftJis => "Shift_JIS",
        }
    }
}

/// Appends `text` encoded as CP932 to `out`, each character CP932 cannot
/// hold written as [`REPLACEMENT`]; returns how many were replaced.
pub fn encode_cp932(text: &str, out: &mut Vec<u8>) -> usize {
    let mut encoder = encoding_rs::SHIFT_JIS.new_encoder();
    let mut rest = text;
    let mut replaced = 0;
    loop {
        // At most two bytes per character, and never more bytes than UTF-8
        // used for it: the input's length (plus slack) always suffices.
        let start = out.len();
        out.resize(start + rest.len() + 16, 0);
        let (result, read, written) = encoder.encode_from_utf8_without_replacement(rest, &mut out[start..], true);
        out.truncate(start + written);
        rest = &rest[read..];
        match result {
            EncoderResult::InputEmpty => return replaced,
            EncoderResult::OutputFull => {}
            EncoderResult::Unmappable(c) => {
                match cp932_form(c) {
                    Some(form) => {
                        let mut bytes = [0u8; 2];
                        let (_, _, written) = encoding_rs::SHIFT_JIS
                            .new_encoder()
                            .encode_from_utf8_without_replacement(form.encode_utf8(&mut [0; 4]), &mut bytes, true);
                        out.extend_from_slice(&bytes[..written]);
                    }
                    None => {
                        // 〓 in CP932.
                        out.extend_from_slice(&[0x81, 0xAC]);
                        replaced += 1;
                    }
                }
            }
        }
    }
}

/// Characters JIS and macOS write at a code point CP932 has under another:
/// the wave dash `〜` (U+301C, as a Mac or a phone types it) is CP932's `～`
/// (U+FF5E), and so on. Written in CP932's form they are the same character
/// on the accountant's screen, so they are not replaced.
fn cp932_form(c: char) -> Option<char> {
    match c {
        '\u{301C}' => Some('\u{FF5E}'),
        '\u{2016}' => Some('\u{2225}'),
        '\u{2014}' => Some('\u{2015}'),
        '\u{00A2}' => Some('\u{FFE0}'),
        '\u{00A3}' => Some('\u{FFE1}'),
        '\u{00AC}' => Some('\u{FFE2}'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> String {
        let (text, _, had_errors) = encoding_rs::SHIFT_JIS.decode(bytes);
        assert!(!had_errors, "not valid CP932: {bytes:?}");
        text.into_owned()
    }

    #[test]
    fn japanese_text_round_trips_through_cp932() {
        let text = "看護チームへのご支援①,\"髙橋\"ｶﾅ 1,000円\r\n";
        let mut out = Vec::new();
        assert_eq!(encode_cp932(text, &mut out), 0);
        assert_eq!(&out[..2], [0x8a, 0xc5], "看");
        assert_eq!(decode(&out), text);
    }

    #[test]
    fn the_jis_forms_of_cp932_characters_are_written_as_cp932s() {
        let mut out = Vec::new();
        assert_eq!(encode_cp932("10時〜12時‖—¢£¬", &mut out), 0);
        assert_eq!(decode(&out), "10時～12時∥―￠￡￢");
    }

    #[test]
    fn characters_cp932_cannot_hold_become_one_geta_mark_each() {
        let mut out = Vec::new();
        assert_eq!(encode_cp932("🍙と𠮷野家", &mut out), 2);
        assert_eq!(decode(&out), "〓と〓野家");
        let mut geta = Vec::new();
        encode_cp932(&REPLACEMENT.to_string(), &mut geta);
        assert_eq!(geta, [0x81, 0xAC]);
        assert!(!out.windows(2).any(|w| w == b"&#"), "no HTML character references");
    }

    #[test]
    fn long_text_is_encoded_whole() {
        let text = "返金(一部)🙏".repeat(10_000);
        let mut out = b"prefix,".to_vec();
        assert_eq!(encode_cp932(&text, &mut out), 10_000);
        assert_eq!(decode(&out[7..]), "返金(一部)〓".repeat(10_000));
    }
}
