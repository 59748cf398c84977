//! An error's text for people: the error and its causes, in order, each
//! said once. Error types here (and in the crates lb uses) often put their
//! cause's text in their own message and also hand the cause on as their
//! source; printing the whole chain would then say it twice.

/// `e` and the causes of its source chain whose text it has not said yet,
/// joined with `: `.
#[must_use]
pub fn text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !said.is_empty() && !out.contains(&said) {
            out.push_str(": ");
            out.push_str(&said);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::text;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Read {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once_and_in_order() {
        // A cause already in the message is not repeated.
        let e = Read {
            path: "/etc/lb/lb.yaml".into(),
            source: std::io::Error::other("permission denied"),
        };
        assert_eq!(text(&e), "reading /etc/lb/lb.yaml: permission denied");
        // Context added on top: every layer once, outermost first.
        let e = anyhow::Error::new(e).context("loading the config");
        assert_eq!(
            text(e.as_ref()),
            "loading the config: reading /etc/lb/lb.yaml: permission denied"
        );
        // A cause not in the message is appended.
        let e = anyhow::anyhow!("refused").context("reload");
        assert_eq!(text(e.as_ref()), "reload: refused");
    }
}
