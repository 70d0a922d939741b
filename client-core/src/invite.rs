//! Invites and enrollment codes: how the server writes them and how a person's typing of a
//! code is read back (`docs/sync-protocol.md`, "Invites"). Always compiled, without the `sync`
//! feature, because the server issues and checks what the device reads (`sync` re-exports it).

/// The start of an invite URI: `hattama://enroll?server=<URL>&code=<CODE>`.
pub const INVITE_PREFIX: &str = "hattama://enroll";

/// The invite URI a coordinator hands out: the server's URL and the code, each
/// percent-encoded as a query value (`docs/sync-protocol.md`, "Invites").
pub fn invite_uri(server_url: &str, code: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("server", server_url)
        .append_pair("code", code)
        .finish();
    format!("{INVITE_PREFIX}?{query}")
}

/// Characters of the server's enrollment codes (no I, L, O or U, which people misread).
pub const CODE_ALPHABET: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The spelling of an enrollment code the server issued (20 characters of
/// [`CODE_ALPHABET`] in groups of four joined by `-`), however a person typed it: in any
/// case, with spaces or dashes anywhere or none, `O` for `0`, `I` or `L` for `1`. Anything
/// that is not such a code is returned trimmed, as it was.
pub fn canonical_code(code: &str) -> String {
    let chars: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect();
    if chars.len() != 20 || !chars.chars().all(|c| CODE_ALPHABET.contains(c)) {
        return code.trim().to_owned();
    }
    let groups: Vec<&str> = (0..5).map(|i| &chars[i * 4..i * 4 + 4]).collect();
    groups.join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invite_encodes_its_values_as_query_values() {
        assert_eq!(
            invite_uri("https://h.example.kz:8443/a b?c&d", "ABCD-EFGH"),
            "hattama://enroll?server=https%3A%2F%2Fh.example.kz%3A8443%2Fa+b%3Fc%26d&code=ABCD-EFGH"
        );
    }
}
