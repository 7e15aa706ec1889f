//! Secrets never leave the process in clear text: every URL that may carry one passes through
//! here before it is logged, returned in an error or shown in a status line.

/// Replaces the value of every `token=` / `apikey=` query parameter and any userinfo password.
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(pos) = find_secret_param(rest) {
        let (head, tail) = rest.split_at(pos);
        out.push_str(head);
        let eq = tail.find('=').map(|i| i + 1).unwrap_or(tail.len());
        out.push_str(&tail[..eq]);
        out.push_str("***");
        let end = tail[eq..]
            .find(['&', '#', ' ', '"', '\''])
            .map(|i| i + eq)
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn find_secret_param(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    ["token=", "apikey=", "api_key="]
        .iter()
        .filter_map(|needle| {
            lower.match_indices(needle).find_map(|(i, _)| {
                let prev = lower[..i].chars().last();
                matches!(prev, Some('?') | Some('&')).then_some(i)
            })
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_query_parameter_is_hidden() {
        let url = "wss://ws.finnhub.io/?token=CANARY123&x=1";
        assert_eq!(redact_url(url), "wss://ws.finnhub.io/?token=***&x=1");
        assert_eq!(
            redact_url("http://h/quote?symbol=A&token=abc"),
            "http://h/quote?symbol=A&token=***"
        );
        assert_eq!(redact_url("no secret here"), "no secret here");
    }
}
