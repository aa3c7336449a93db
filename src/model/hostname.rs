//! What the allocator accepts as a VM's hostname.

/// Longest hostname accepted (DNS limit).
pub const MAX_HOSTNAME_LEN: usize = 253;

/// Longest dot-separated part of a hostname (DNS limit).
pub const MAX_HOSTNAME_LABEL_LEN: usize = 63;

/// Hostnames are RFC 1123 names: parts of 1 to 63 letters, digits and `-` (not first or
/// last), joined by single dots, 253 characters at most. They travel in URL paths, log
/// lines and the names of folders, so `.`, `..` and anything else is refused.
pub fn validate_hostname(hostname: &str) -> Result<(), String> {
    if hostname.is_empty() || hostname.len() > MAX_HOSTNAME_LEN {
        return Err(format!(
            "Hostname must be 1 to {MAX_HOSTNAME_LEN} characters long."
        ));
    }
    if !hostname
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
    {
        return Err(
            "Hostname may contain only letters, digits, '-' and '.' (RFC 1123; no '_').".into(),
        );
    }
    for label in hostname.split('.') {
        if label.is_empty() {
            return Err(
                "Hostname must not start or end with '.' nor contain '..': every \
                 dot-separated part needs at least one character."
                    .into(),
            );
        }
        if label.len() > MAX_HOSTNAME_LABEL_LEN {
            return Err(format!(
                "Hostname part {label} is longer than {MAX_HOSTNAME_LABEL_LEN} characters."
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "Hostname part {label} must not start or end with '-'."
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_rfc_1123_names() {
        let longest_label = "a".repeat(MAX_HOSTNAME_LABEL_LEN);
        let longest = [
            &"a".repeat(61),
            longest_label.as_str(),
            &longest_label,
            &longest_label,
        ]
        .join(".");
        assert_eq!(longest.len(), MAX_HOSTNAME_LEN);
        for good in [
            "sleap-lablink-client-prod-vm-1",
            "host.example-1",
            "VM-1",
            "1",
            "a.b.c",
            "0-0",
            longest_label.as_str(),
            longest.as_str(),
        ] {
            assert_eq!(validate_hostname(good), Ok(()), "{good:?}");
        }
        let long_label = "a".repeat(MAX_HOSTNAME_LABEL_LEN + 1);
        let too_long = format!("a{longest}");
        for bad in [
            "",
            ".",
            "..",
            ".x",
            "x.",
            "a..b",
            "a_b",
            "host.example_1",
            "-a",
            "a-",
            "a.-b",
            "a/b",
            "../etc",
            "a b",
            "vm-1\n",
            "ä",
            long_label.as_str(),
            too_long.as_str(),
        ] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }
}
