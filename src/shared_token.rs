//! The agents' bearer token, readable everywhere and replaceable while the allocator runs.
//! It is also the key of each VM's own credential:
//! `lablink-vm:<hostname>:<nonce>:<HMAC-SHA256 of hostname and nonce under the token>`.
//! The nonce is that launch's identity of the VM (`store::identities`): the credential lets
//! a VM act as itself and nothing else, dies with the VM, and changes with the token when
//! it is rotated. (Credentials issued before identities existed name no nonce.)

use std::sync::{Arc, RwLock};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const VM_PREFIX: &str = "lablink-vm:";

/// Who a valid agent credential speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentScope {
    /// The shared token (upstream 0.1.2 style), when the configuration accepts it.
    AnyVm,
    /// One VM, as launched with identity `nonce` (whether that launch is still current is
    /// for the caller to check against the store).
    Vm { host: String, nonce: String },
}

#[derive(Clone)]
pub struct SharedToken(Arc<RwLock<String>>);

impl SharedToken {
    pub fn new(token: String) -> SharedToken {
        SharedToken(Arc::new(RwLock::new(token)))
    }

    pub fn get(&self) -> String {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, token: String) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = token;
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let current = self.0.read().unwrap_or_else(|e| e.into_inner());
        presented.as_bytes().ct_eq(current.as_bytes()).into()
    }

    /// The credential of one VM in the launch whose identity is `nonce`.
    pub fn for_vm(&self, hostname: &str, nonce: &str) -> String {
        let tag = hex::encode(self.mac(hostname, nonce).finalize().into_bytes());
        if nonce.is_empty() {
            format!("{VM_PREFIX}{hostname}:{tag}")
        } else {
            format!("{VM_PREFIX}{hostname}:{nonce}:{tag}")
        }
    }

    /// Whom `presented` authenticates: a VM credential signed with the current token, the
    /// shared token only when `accept_shared`. Comparisons are constant-time.
    pub fn check(&self, presented: &str, accept_shared: bool) -> Option<AgentScope> {
        if let Some(rest) = presented.strip_prefix(VM_PREFIX) {
            let (hostname, rest) = rest.split_once(':')?;
            let (nonce, tag) = rest.rsplit_once(':').unwrap_or(("", rest));
            let tag = hex::decode(tag).ok()?;
            return self
                .mac(hostname, nonce)
                .verify_slice(&tag)
                .is_ok()
                .then(|| AgentScope::Vm {
                    host: hostname.to_owned(),
                    nonce: nonce.to_owned(),
                });
        }
        (accept_shared && self.matches(presented)).then_some(AgentScope::AnyVm)
    }

    fn mac(&self, hostname: &str, nonce: &str) -> Hmac<Sha256> {
        let key = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"lablink-vm\0");
        mac.update(hostname.as_bytes());
        if !nonce.is_empty() {
            mac.update(b"\0");
            mac.update(nonce.as_bytes());
        }
        mac
    }
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedToken(<redacted>)")
    }
}

/// `text` with every VM credential (`lablink-vm:<host>:<tag>`) replaced by `with`.
pub fn redact_vm_credentials(text: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(VM_PREFIX) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-')))
            .unwrap_or(tail.len());
        out.push_str(with);
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_credential_names_its_vm_and_nothing_else() {
        let token = SharedToken::new("the-shared-secret".into());
        let one = token.for_vm("sleap-vm-1", "0a1b");
        assert!(one.starts_with("lablink-vm:sleap-vm-1:0a1b:"));
        assert_eq!(
            token.check(&one, false),
            Some(AgentScope::Vm {
                host: "sleap-vm-1".into(),
                nonce: "0a1b".into()
            })
        );
        // Another launch's nonce with this tag: refused.
        assert_eq!(token.check(&one.replace(":0a1b:", ":0a1c:"), true), None);
        // A credential from before identities (no nonce) still parses, with an empty one.
        let legacy = token.for_vm("sleap-vm-1", "");
        assert_eq!(
            token.check(&legacy, false),
            Some(AgentScope::Vm {
                host: "sleap-vm-1".into(),
                nonce: String::new()
            })
        );
        // Another VM's name with this VM's tag, a changed tag, a truncated one: refused.
        let forged = one.replace("sleap-vm-1", "sleap-vm-2");
        assert_eq!(token.check(&forged, true), None);
        let mut flipped = one.clone();
        let last = flipped.pop().expect("char");
        flipped.push(if last == '0' { '1' } else { '0' });
        assert_eq!(token.check(&flipped, true), None);
        assert_eq!(token.check(&one[..one.len() - 2], true), None);
        assert_eq!(token.check("lablink-vm:no-tag", true), None);
        // The shared token only when accepted.
        assert_eq!(token.check("the-shared-secret", false), None);
        assert_eq!(
            token.check("the-shared-secret", true),
            Some(AgentScope::AnyVm)
        );
        // Rotation changes every VM's credential.
        token.set("a-new-secret".into());
        assert_eq!(token.check(&one, true), None);
        assert_ne!(token.for_vm("sleap-vm-1", "0a1b"), one);
    }

    #[test]
    fn credentials_are_redacted_wherever_they_appear() {
        let token = SharedToken::new("k".into());
        let line = format!(
            "token={}, next {} end",
            token.for_vm("a-vm-1", "ff00"),
            token.for_vm("b.vm-2", "")
        );
        assert_eq!(
            redact_vm_credentials(&line, "[x]"),
            "token=[x], next [x] end"
        );
        assert_eq!(redact_vm_credentials("nothing here", "[x]"), "nothing here");
    }
}
