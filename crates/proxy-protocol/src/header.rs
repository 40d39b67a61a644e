//! [`read_header`]: one PROXY protocol header read off a connection, byte-exact.

use std::io;
use std::net::SocketAddr;

use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest version 1 (text) header, `\r\n` included, as the specification sets it.
pub const MAX_V1_LEN: usize = 107;

/// The longest version 2 (binary) header accepted, TLVs included. The addresses take at
/// most 232 bytes (216 for UNIX sockets); the rest leaves room for the TLVs load
/// balancers add (AWS, Azure and GCP endpoint identifiers take tens of bytes). The
/// specification allows 65 551 bytes; a longer header is refused rather than buffered.
pub const MAX_V2_LEN: usize = 2048;

/// What a PROXY protocol header said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The protocol version: 1 (text) or 2 (binary).
    pub version: u8,
    /// The client's address as the balancer saw it; `None` when the header carries no
    /// TCP address (version 2 `LOCAL` command, for the balancer's own health checks;
    /// `UNKNOWN` in version 1; `UNSPEC` or UNIX sockets in version 2): the socket peer
    /// is then the client, as the specification asks.
    pub source: Option<SocketAddr>,
    /// The address the client connected to on the balancer; `None` as for `source`.
    pub destination: Option<SocketAddr>,
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    /// The peer is not one of the trusted balancers.
    #[error("the peer is not a trusted PROXY protocol sender")]
    Untrusted,
    /// The header did not arrive in time.
    #[error("no complete PROXY protocol header within the timeout")]
    TimedOut,
    /// The connection did not start with a PROXY protocol header.
    #[error("the connection did not start with a PROXY protocol header")]
    Missing,
    /// The header is malformed.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    /// The header is longer than [`MAX_V1_LEN`] or [`MAX_V2_LEN`].
    #[error(
        "PROXY protocol header too long (version 1 ends within {MAX_V1_LEN} bytes; version 2 is accepted up to {MAX_V2_LEN})"
    )]
    TooLarge,
    /// The peer closed the connection before the header was complete.
    #[error("the connection closed before the PROXY protocol header was complete")]
    Closed,
    /// Reading the connection failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

impl ProxyProtocolError {
    /// A short name for logs and metrics labels: `untrusted`, `timeout`, `missing`,
    /// `invalid`, `too_large`, `closed`, `io`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Untrusted => "untrusted",
            Self::TimedOut => "timeout",
            Self::Missing => "missing",
            Self::Invalid(_) => "invalid",
            Self::TooLarge => "too_large",
            Self::Closed => "closed",
            Self::Io(_) => "io",
        }
    }
}

/// Reads one PROXY protocol header (version 1 or 2) from the start of `stream`, and not
/// one byte more: what follows (a TLS handshake, an HTTP request) stays in the socket for
/// the next reader. Bytes are looked at with `peek` and consumed only once they are known
/// to belong to the header, so the usual header, sent in one segment, costs one `peek`
/// and one `read`. At most [`MAX_V2_LEN`] bytes are held.
///
/// No timeout: wrap the call in one ([`ProxyProtocol::accept`](crate::ProxyProtocol::accept)
/// does).
pub async fn read_header(stream: &mut TcpStream) -> Result<ProxyHeader, ProxyProtocolError> {
    let mut buf = vec![0u8; MAX_V2_LEN];
    let mut have = 0;
    loop {
        let n = stream.peek(&mut buf[have..]).await?;
        if n == 0 {
            return Err(ProxyProtocolError::Closed);
        }
        let avail = have + n;
        match frame(&buf[..avail])? {
            Some((len, header)) => {
                stream.read_exact(&mut buf[have..len]).await?;
                return Ok(header);
            }
            None => {
                // Incomplete: every byte seen belongs to the header; take them and wait
                // for more (a `peek` on an emptied socket waits for new data).
                stream.read_exact(&mut buf[have..avail]).await?;
                have = avail;
                if have == buf.len() {
                    return Err(ProxyProtocolError::TooLarge);
                }
            }
        }
    }
}

/// Parses a header from the start of `bytes`: its length and content when complete,
/// `None` when more bytes are needed.
pub(crate) fn frame(bytes: &[u8]) -> Result<Option<(usize, ProxyHeader)>, ProxyProtocolError> {
    let (text, binary) = (b"PROXY ", v2::PROTOCOL_PREFIX);
    if !text.starts_with(&bytes[..bytes.len().min(text.len())])
        && !binary.starts_with(&bytes[..bytes.len().min(binary.len())])
    {
        return Err(ProxyProtocolError::Missing);
    }
    if bytes.len() >= v2::PROTOCOL_PREFIX.len() + 4 && bytes.starts_with(v2::PROTOCOL_PREFIX) {
        let at = v2::PROTOCOL_PREFIX.len() + 2;
        let len = usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
        if 16 + len > MAX_V2_LEN {
            return Err(ProxyProtocolError::TooLarge);
        }
    }
    let parsed = HeaderResult::parse(bytes);
    if parsed.is_incomplete() {
        return Ok(None);
    }
    match parsed {
        HeaderResult::V2(Ok(h)) => {
            let len = h.len();
            Ok(Some((len, from_v2(&h)?)))
        }
        HeaderResult::V1(Ok(h)) => {
            let len = h.header.len();
            if len > MAX_V1_LEN {
                return Err(ProxyProtocolError::TooLarge);
            }
            let (source, destination) = match h.addresses {
                v1::Addresses::Tcp4(a) => (
                    Some(SocketAddr::from((a.source_address, a.source_port))),
                    Some(SocketAddr::from((
                        a.destination_address,
                        a.destination_port,
                    ))),
                ),
                v1::Addresses::Tcp6(a) => (
                    Some(canonical(SocketAddr::from((
                        a.source_address,
                        a.source_port,
                    )))),
                    Some(canonical(SocketAddr::from((
                        a.destination_address,
                        a.destination_port,
                    )))),
                ),
                v1::Addresses::Unknown => (None, None),
            };
            Ok(Some((
                len,
                ProxyHeader {
                    version: 1,
                    source,
                    destination,
                },
            )))
        }
        HeaderResult::V2(Err(e)) => Err(ProxyProtocolError::Invalid(e.to_string())),
        HeaderResult::V1(Err(e)) => Err(match e {
            v1::BinaryParseError::Parse(v1::ParseError::InvalidPrefix) => {
                ProxyProtocolError::Missing
            }
            v1::BinaryParseError::Parse(v1::ParseError::HeaderTooLong) => {
                ProxyProtocolError::TooLarge
            }
            e => ProxyProtocolError::Invalid(e.to_string()),
        }),
    }
}

fn from_v2(h: &v2::Header<'_>) -> Result<ProxyHeader, ProxyProtocolError> {
    let local = ProxyHeader {
        version: 2,
        source: None,
        destination: None,
    };
    if h.command == v2::Command::Local {
        return Ok(local);
    }
    if h.protocol == v2::Protocol::Datagram {
        return Err(ProxyProtocolError::Invalid(
            "the header describes a datagram (UDP) flow, not this TCP connection".into(),
        ));
    }
    Ok(match h.addresses {
        v2::Addresses::IPv4(a) => ProxyHeader {
            source: Some(SocketAddr::from((a.source_address, a.source_port))),
            destination: Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
            ..local
        },
        v2::Addresses::IPv6(a) => ProxyHeader {
            source: Some(canonical(SocketAddr::from((
                a.source_address,
                a.source_port,
            )))),
            destination: Some(canonical(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            )))),
            ..local
        },
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => local,
    })
}

/// IPv4-mapped IPv6 addresses as their IPv4 address, as everywhere in towergate.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = v2::PROTOCOL_PREFIX.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = (addresses.len() + tlvs.len()) as u16;
        h.extend(len.to_be_bytes());
        h.extend(addresses);
        h.extend(tlvs);
        h
    }

    const V4: [u8; 12] = [203, 0, 113, 7, 10, 0, 0, 1, 0xc3, 0x50, 0, 80];

    #[test]
    fn v2_addresses_and_length() {
        let mut bytes = v2_header(1, 0x11, &V4, &[0x04, 0, 1, 42]);
        let len = bytes.len();
        bytes.extend(b"GET / HTTP/1.1\r\n");
        let (n, h) = frame(&bytes).unwrap().unwrap();
        assert_eq!(n, len);
        assert_eq!(h.version, 2);
        assert_eq!(h.source, Some("203.0.113.7:50000".parse().unwrap()));
        assert_eq!(h.destination, Some("10.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn v2_local_and_unspec_keep_the_peer() {
        let (_, h) = frame(&v2_header(0, 0x11, &V4, &[])).unwrap().unwrap();
        assert_eq!((h.source, h.destination), (None, None));
        let (_, h) = frame(&v2_header(1, 0x00, &[], &[])).unwrap().unwrap();
        assert_eq!(h.source, None);
        let err = frame(&v2_header(1, 0x12, &V4, &[])).unwrap_err();
        assert!(matches!(err, ProxyProtocolError::Invalid(_)), "{err}");
    }

    #[test]
    fn v2_partial_and_oversized() {
        let bytes = v2_header(1, 0x11, &V4, &[]);
        for cut in [1, 11, 12, 15, 16, 20, bytes.len() - 1] {
            assert!(frame(&bytes[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let mut big = v2::PROTOCOL_PREFIX.to_vec();
        big.extend([0x21, 0x11]);
        big.extend(4000u16.to_be_bytes());
        assert!(matches!(frame(&big), Err(ProxyProtocolError::TooLarge)));
    }

    #[test]
    fn v1_forms() {
        let (n, h) = frame(b"PROXY TCP4 203.0.113.7 10.0.0.1 50000 80\r\nGET /")
            .unwrap()
            .unwrap();
        assert_eq!(n, 42);
        assert_eq!(h.version, 1);
        assert_eq!(h.source, Some("203.0.113.7:50000".parse().unwrap()));
        let (_, h) = frame(b"PROXY TCP6 2001:db8::7 2001:db8::1 50000 443\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, Some("[2001:db8::7]:50000".parse().unwrap()));
        let (n, h) = frame(b"PROXY UNKNOWN\r\nGET").unwrap().unwrap();
        assert_eq!((n, h.source), (15, None));
        for partial in [
            &b"P"[..],
            b"PROXY",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 50000 8",
        ] {
            assert!(frame(partial).unwrap().is_none());
        }
    }

    /// Over a socket: a header split across segments is put together, and the bytes after
    /// it stay for the next reader.
    #[tokio::test]
    async fn reads_exactly_the_header() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sender = tokio::spawn(async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            let header = v2_header(1, 0x11, &V4, &[]);
            conn.write_all(&header[..5]).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            conn.write_all(&header[5..14]).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut rest = header[14..].to_vec();
            rest.extend(b"PROXY TCP4 198.51.100.1 10.0.0.1 1 2\r\nhello");
            conn.write_all(&rest).await.unwrap();
            conn
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let h = read_header(&mut stream).await.unwrap();
        assert_eq!(h.source, Some("203.0.113.7:50000".parse().unwrap()));
        // The next header is read as such, and what follows it is left alone.
        let h = read_header(&mut stream).await.unwrap();
        assert_eq!(h.source, Some("198.51.100.1:1".parse().unwrap()));
        let mut rest = [0u8; 5];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"hello");
        drop(sender.await.unwrap());
        assert!(matches!(
            read_header(&mut stream).await,
            Err(ProxyProtocolError::Closed)
        ));
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            frame(b"GET / HTTP/1.1\r\n"),
            Err(ProxyProtocolError::Missing)
        ));
        assert!(matches!(
            frame(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x00"),
            Err(ProxyProtocolError::Missing)
        ));
        assert!(matches!(
            frame(b"PROXY TCP4 203.0.113.999 10.0.0.1 50000 80\r\n"),
            Err(ProxyProtocolError::Invalid(_))
        ));
        let long = format!("PROXY TCP4 {}", "1".repeat(120));
        assert!(matches!(
            frame(long.as_bytes()),
            Err(ProxyProtocolError::TooLarge)
        ));
    }
}
