//! The fixed 8-byte bodies: BEGIN_REQUEST, END_REQUEST and UNKNOWN_TYPE (FCGI-8-2).
//!
//! Each `parse` takes a record's whole content (whose length the header
//! proved) and insists on exactly 8 bytes. Reserved bytes are ignored on
//! receipt and sent as zero (FCGI-AMB-1), so they are not stored.

use nom::Parser;
use nom::number::complete::{be_u8, be_u16, be_u32};

use super::Error;
use super::record::{ProtocolStatus, RecordType, Role};

/// `FCGI_KEEP_CONN`: the only defined BEGIN_REQUEST flag bit (FCGI-5.1-4).
pub const KEEP_CONN: u8 = 1;

/// Content length of every body in this module (FCGI-8-2).
pub const BODY_LEN: usize = 8;

/// The content of a BEGIN_REQUEST record (FCGI-5.1-2).
///
/// ```
/// use portico_protocols::fastcgi::{BeginRequestBody, Role};
/// let body = BeginRequestBody::parse(b"\x00\x01\x01\0\0\0\0\0")?;
/// assert_eq!(body.role, Role::RESPONDER);
/// assert!(body.keep_conn());
/// assert_eq!(body.to_bytes(), *b"\x00\x01\x01\0\0\0\0\0");
/// # Ok::<(), portico_protocols::fastcgi::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BeginRequestBody {
    /// The role the web server expects (FCGI-5.1-3).
    pub role: Role,
    /// Flag bits; only [`KEEP_CONN`] is defined. Other bits are kept verbatim.
    pub flags: u8,
}

impl BeginRequestBody {
    /// A body with the given role and `KEEP_CONN` set or clear.
    pub fn new(role: Role, keep_conn: bool) -> Self {
        BeginRequestBody {
            role,
            flags: if keep_conn { KEEP_CONN } else { 0 },
        }
    }

    /// `true` if `FCGI_KEEP_CONN` is set (FCGI-5.1-4).
    pub fn keep_conn(&self) -> bool {
        self.flags & KEEP_CONN != 0
    }

    /// Parses a BEGIN_REQUEST record's content; it must be exactly 8 bytes.
    pub fn parse(content: &[u8]) -> Result<Self, Error> {
        // FCGI-5.1-2: the body is 8 bytes.
        let body = exact(content).ok_or(Error::BeginRequestBodyLength(len16(content)))?;
        let parsed: nom::IResult<&[u8], (u16, u8)> = (be_u16, be_u8).parse(body);
        let (_, (role, flags)) = parsed.map_err(|_| Error::BeginRequestBodyLength(8))?;
        Ok(BeginRequestBody {
            role: Role(role),
            flags,
        })
    }

    /// The 8 content bytes; reserved bytes are zero (FCGI-AMB-1).
    pub fn to_bytes(&self) -> [u8; BODY_LEN] {
        let [r1, r0] = self.role.0.to_be_bytes();
        [r1, r0, self.flags, 0, 0, 0, 0, 0]
    }

    /// Appends the 8 content bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}

/// The content of an END_REQUEST record (FCGI-5.5-2): `appStatus` in bytes 0–3,
/// `protocolStatus` in byte 4 (FCGI-AMB-6).
///
/// ```
/// use portico_protocols::fastcgi::{EndRequestBody, ProtocolStatus};
/// let body = EndRequestBody::parse(b"\x00\x00\x03\xaa\x00\0\0\0")?;
/// assert_eq!(body.app_status, 938);
/// assert_eq!(body.protocol_status, ProtocolStatus::REQUEST_COMPLETE);
/// # Ok::<(), portico_protocols::fastcgi::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndRequestBody {
    /// Application status, unsigned 32-bit (FCGI-AMB-15).
    pub app_status: u32,
    /// Protocol status (FCGI-5.5-4).
    pub protocol_status: ProtocolStatus,
}

impl EndRequestBody {
    /// Parses an END_REQUEST record's content; it must be exactly 8 bytes.
    pub fn parse(content: &[u8]) -> Result<Self, Error> {
        // FCGI-5.5-2: the body is 8 bytes.
        let body = exact(content).ok_or(Error::EndRequestBodyLength(len16(content)))?;
        let parsed: nom::IResult<&[u8], (u32, u8)> = (be_u32, be_u8).parse(body);
        let (_, (app_status, protocol_status)) =
            parsed.map_err(|_| Error::EndRequestBodyLength(8))?;
        Ok(EndRequestBody {
            app_status,
            protocol_status: ProtocolStatus(protocol_status),
        })
    }

    /// The 8 content bytes; reserved bytes are zero (FCGI-AMB-1).
    pub fn to_bytes(&self) -> [u8; BODY_LEN] {
        let [a3, a2, a1, a0] = self.app_status.to_be_bytes();
        [a3, a2, a1, a0, self.protocol_status.0, 0, 0, 0]
    }

    /// Appends the 8 content bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}

/// The content of an UNKNOWN_TYPE record (FCGI-4.2-2): the type not understood.
///
/// ```
/// use portico_protocols::fastcgi::{RecordType, UnknownTypeBody};
/// let body = UnknownTypeBody { record_type: RecordType(200) };
/// assert_eq!(body.to_bytes(), [200, 0, 0, 0, 0, 0, 0, 0]);
/// assert_eq!(UnknownTypeBody::parse(&body.to_bytes())?, body);
/// # Ok::<(), portico_protocols::fastcgi::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownTypeBody {
    /// The management record type the application did not understand.
    pub record_type: RecordType,
}

impl UnknownTypeBody {
    /// Parses an UNKNOWN_TYPE record's content; it must be exactly 8 bytes.
    pub fn parse(content: &[u8]) -> Result<Self, Error> {
        // FCGI-4.2-2: byte 0 is the type, bytes 1-7 reserved.
        let body = exact(content).ok_or(Error::UnknownTypeBodyLength(len16(content)))?;
        let parsed: nom::IResult<&[u8], u8> = be_u8.parse(body);
        let (_, t) = parsed.map_err(|_| Error::UnknownTypeBodyLength(8))?;
        Ok(UnknownTypeBody {
            record_type: RecordType(t),
        })
    }

    /// The 8 content bytes; reserved bytes are zero (FCGI-AMB-1).
    pub fn to_bytes(&self) -> [u8; BODY_LEN] {
        [self.record_type.0, 0, 0, 0, 0, 0, 0, 0]
    }

    /// Appends the 8 content bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}

/// `content` if it is exactly [`BODY_LEN`] bytes long.
fn exact(content: &[u8]) -> Option<&[u8]> {
    (content.len() == BODY_LEN).then_some(content)
}

/// A content length for an error; record content never exceeds `u16::MAX`.
fn len16(content: &[u8]) -> u16 {
    u16::try_from(content.len()).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// FCGI-5.1-2: BEGIN_REQUEST content of any length but 8 is an error.
    #[test]
    fn fcgi_5_1_2_begin_body_wrong_length() {
        assert_eq!(
            BeginRequestBody::parse(b"\x00\x01\x01\0\0\0\0"),
            Err(Error::BeginRequestBodyLength(7))
        );
        assert_eq!(
            BeginRequestBody::parse(b"\x00\x01\x01\0\0\0\0\0\0"),
            Err(Error::BeginRequestBodyLength(9))
        );
        assert_eq!(
            BeginRequestBody::parse(b""),
            Err(Error::BeginRequestBodyLength(0))
        );
    }

    /// FCGI-5.1-4: KEEP_CONN is bit 0; other bits survive but do not set it.
    #[test]
    fn fcgi_5_1_4_keep_conn_bit() {
        let b = BeginRequestBody::parse(b"\x00\x03\xfe\0\0\0\0\0").unwrap();
        assert_eq!(b.role, Role::FILTER);
        assert!(!b.keep_conn());
        assert_eq!(b.flags, 0xfe);
        assert!(BeginRequestBody::new(Role::AUTHORIZER, true).keep_conn());
    }

    /// FCGI-AMB-1: reserved bytes are ignored on receipt and sent as zero.
    #[test]
    fn fcgi_amb_1_reserved_ignored_and_zeroed() {
        let b = BeginRequestBody::parse(b"\x00\x01\x00\xff\xff\xff\xff\xff").unwrap();
        assert_eq!(b.to_bytes(), *b"\x00\x01\x00\0\0\0\0\0");
        let e = EndRequestBody::parse(b"\0\0\0\x01\x02\xff\xff\xff").unwrap();
        assert_eq!(e.to_bytes(), *b"\0\0\0\x01\x02\0\0\0");
        let u = UnknownTypeBody::parse(b"\x0c\xff\xff\xff\xff\xff\xff\xff").unwrap();
        assert_eq!(u.record_type, RecordType(12));
    }

    /// FCGI-5.5-2 and FCGI-AMB-6: appStatus is bytes 0-3, protocolStatus byte 4.
    #[test]
    fn fcgi_5_5_2_end_body_layout() {
        let e = EndRequestBody::parse(b"\x00\x00\x00\x00\x00\x00\x00\x00").unwrap();
        assert_eq!(
            (e.app_status, e.protocol_status),
            (0, ProtocolStatus::REQUEST_COMPLETE)
        );
        let e = EndRequestBody::parse(b"\xff\xff\xff\xff\x03\0\0\0").unwrap();
        assert_eq!(
            (e.app_status, e.protocol_status),
            (u32::MAX, ProtocolStatus::UNKNOWN_ROLE)
        );
        assert_eq!(
            EndRequestBody::parse(b"\0\0"),
            Err(Error::EndRequestBodyLength(2))
        );
    }

    /// FCGI-4.2-2: UNKNOWN_TYPE body is 8 bytes with the type in byte 0.
    #[test]
    fn fcgi_4_2_2_unknown_type_body() {
        assert_eq!(
            UnknownTypeBody::parse(b"\xc8\0\0\0\0\0\0\0")
                .unwrap()
                .record_type,
            RecordType(200)
        );
        assert_eq!(
            UnknownTypeBody::parse(b"\xc8"),
            Err(Error::UnknownTypeBodyLength(1))
        );
    }

    proptest! {
        #[test]
        fn prop_begin_roundtrip(role in any::<u16>(), flags in any::<u8>()) {
            let b = BeginRequestBody { role: Role(role), flags };
            let mut out = Vec::new();
            b.encode(&mut out);
            prop_assert_eq!(BeginRequestBody::parse(&out), Ok(b));
        }

        #[test]
        fn prop_end_roundtrip(app_status in any::<u32>(), ps in any::<u8>()) {
            let e = EndRequestBody { app_status, protocol_status: ProtocolStatus(ps) };
            let mut out = Vec::new();
            e.encode(&mut out);
            prop_assert_eq!(EndRequestBody::parse(&out), Ok(e));
        }

        #[test]
        fn prop_unknown_type_roundtrip(t in any::<u8>()) {
            let u = UnknownTypeBody { record_type: RecordType(t) };
            let mut out = Vec::new();
            u.encode(&mut out);
            prop_assert_eq!(UnknownTypeBody::parse(&out), Ok(u));
        }
    }
}
