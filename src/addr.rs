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
    /// An inherited listening socket: `fd:N` (a descriptor number; `fd:0` is the FastCGI
    /// convention) or `systemd:NAME` / `systemd:N` (socket activation, `LISTEN_FDS`,
    /// matched by `LISTEN_FDNAMES` name or by index).
    Inherited(Inherited),
}

/// Which inherited socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inherited {
    /// A descriptor number.
    Fd(i32),
    /// A systemd socket by index (0-based, fd 3 + N).
    SystemdIndex(usize),
    /// A systemd socket by its `FileDescriptorName=`.
    SystemdName(String),
}

/// Why an address string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// `unix:` with nothing after it.
    #[error("unix: address needs a path")]
    EmptyPath,
    /// Not `host:port` with a numeric port.
    #[error("expected HOST:PORT, unix:/path, fd:N or systemd:NAME, got {0:?}")]
    Malformed(String),
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(n) = s.strip_prefix("fd:") {
            return n
                .parse::<i32>()
                .ok()
                .filter(|n| *n >= 0)
                .map(|n| Address::Inherited(Inherited::Fd(n)))
                .ok_or_else(|| AddressError::Malformed(s.to_owned()));
        }
        if let Some(name) = s.strip_prefix("systemd:") {
            if name.is_empty() {
                return Err(AddressError::Malformed(s.to_owned()));
            }
            return Ok(Address::Inherited(match name.parse::<usize>() {
                Ok(i) => Inherited::SystemdIndex(i),
                Err(_) => Inherited::SystemdName(name.to_owned()),
            }));
        }
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
            Address::Inherited(Inherited::Fd(n)) => write!(f, "fd:{n}"),
            Address::Inherited(Inherited::SystemdIndex(i)) => write!(f, "systemd:{i}"),
            Address::Inherited(Inherited::SystemdName(n)) => write!(f, "systemd:{n}"),
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
        assert_eq!(
            "fd:0".parse::<Address>(),
            Ok(Address::Inherited(Inherited::Fd(0)))
        );
        assert_eq!(
            "systemd:fcgi".parse::<Address>(),
            Ok(Address::Inherited(Inherited::SystemdName("fcgi".into())))
        );
        assert_eq!(
            "systemd:1".parse::<Address>(),
            Ok(Address::Inherited(Inherited::SystemdIndex(1)))
        );
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "localhost",
            "host:",
            ":80",
            "host:99999",
            "unix:",
            "::1:80",
            "fd:-1",
            "fd:x",
            "systemd:",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }
}
