//! The port an HTTP replica is told to listen on (`$PORT`).
//!
//! The replica binds the port itself, so between Courier's check that it is free and the
//! replica's bind another socket may take it. A port from the kernel's ephemeral range
//! (`ip_local_port_range`) is what every listener bound to port 0 and every outgoing
//! connection's source port is drawn from, so there the race was real: another listener on the
//! machine took the port, answered the replica's readiness probe and received its calls. Ports
//! are therefore drawn at random from below that range, where only programs that ask for a port
//! by number bind.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{Ipv4Addr, TcpListener};

/// Where Linux keeps the ephemeral range (`low high`).
const EPHEMERAL_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The ephemeral range's low end when it cannot be read (Linux's default).
const DEFAULT_EPHEMERAL_LOW: u16 = 32768;

/// Lowest port handed out: ports below are left to well-known and registered services.
const LOWEST: u16 = 10000;

/// Random ports tried before falling back to one the kernel picks.
const TRIES: usize = 64;

/// A port on 127.0.0.1 that was free a moment ago, below the ephemeral range when there is
/// room there, otherwise one the kernel picks.
pub(super) fn free_port() -> io::Result<u16> {
    let low = ephemeral_low();
    if let Some(range) = below(low) {
        let mut state = std::collections::hash_map::RandomState::new().build_hasher();
        state.write_u32(std::process::id());
        for _ in 0..TRIES {
            let offset = state.finish() % u64::from(range.1 - range.0);
            state.write_u64(offset);
            let port = range.0 + u16::try_from(offset).expect("below a u16 range's width");
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The low end of the kernel's ephemeral range.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string(EPHEMERAL_RANGE)
        .ok()
        .and_then(|text| parse_low(&text))
        .unwrap_or(DEFAULT_EPHEMERAL_LOW)
}

/// The first number of `ip_local_port_range`'s text (`"32768\t60999\n"`).
fn parse_low(text: &str) -> Option<u16> {
    text.split_whitespace().next()?.parse().ok()
}

/// The ports handed out, `[start, end)`, for an ephemeral range starting at `low`: from
/// [`LOWEST`] up to `low`, or none when that leaves fewer than 1024 ports.
fn below(low: u16) -> Option<(u16, u16)> {
    (low >= LOWEST + 1024).then_some((LOWEST, low))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_low_end_is_read_from_the_kernels_text() {
        assert_eq!(parse_low("32768\t60999\n"), Some(32768));
        assert_eq!(parse_low("1024 65535"), Some(1024));
        assert_eq!(parse_low(""), None);
        assert_eq!(parse_low("x 2"), None);
    }

    #[test]
    fn ports_come_from_below_the_ephemeral_range_when_there_is_room() {
        assert_eq!(below(32768), Some((10000, 32768)));
        assert_eq!(below(LOWEST + 1023), None);
        assert_eq!(below(1024), None);
    }

    #[test]
    fn a_free_port_is_outside_the_ephemeral_range_and_can_be_bound() {
        let low = ephemeral_low();
        for _ in 0..20 {
            let port = free_port().expect("a free port");
            if below(low).is_some() {
                assert!((LOWEST..low).contains(&port), "{port} not below {low}");
            }
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free");
        }
    }

    #[test]
    fn ports_handed_out_differ() {
        let ports: std::collections::HashSet<u16> =
            (0..20).map(|_| free_port().expect("a free port")).collect();
        assert!(ports.len() > 1, "always the same port: {ports:?}");
    }
}
