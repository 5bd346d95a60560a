//! Listener and upstream addresses: `HOST:PORT` or `unix:/path`.
//!
//! Must not import rt, listen or backend.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where to listen or connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TCP `host:port` (IPv6 hosts in brackets).
    Tcp(String),
    /// A Unix-domain socket path.
    Unix(PathBuf),
}

/// Why an address string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// `unix:` with nothing after it.
    #[error("unix: address needs a path")]
    EmptyPath,
    /// Not `host:port` with a numeric port.
    #[error("expected HOST:PORT or unix:/path, got {0:?}")]
    Malformed(String),
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(AddressError::EmptyPath);
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| AddressError::Malformed(s.to_owned()))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(AddressError::Malformed(s.to_owned()));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(AddressError::Malformed(s.to_owned()));
        }
        Ok(Address::Tcp(s.to_owned()))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(s) => f.write_str(s),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_unix() {
        assert_eq!(
            "127.0.0.1:8080".parse::<Address>(),
            Ok(Address::Tcp("127.0.0.1:8080".into()))
        );
        assert_eq!(
            "[::1]:9000".parse::<Address>(),
            Ok(Address::Tcp("[::1]:9000".into()))
        );
        assert_eq!(
            "unix:/run/p.sock".parse::<Address>(),
            Ok(Address::Unix("/run/p.sock".into()))
        );
        assert_eq!(
            "unix:/run/p.sock".parse::<Address>().map(|a| a.to_string()),
            Ok("unix:/run/p.sock".to_string())
        );
    }

    #[test]
    fn refuses_malformed() {
        for bad in ["", "localhost", "host:", ":80", "host:99999", "unix:", "::1:80"] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }
}
