//! Identifiers chom makes up: deployment ids (a UTC time to the millisecond plus 32 random
//! bits). It owns their format only; it must not decide when an id is made or stored.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::time::Timestamp;

/// A new deployment id: UTC time to the millisecond plus 32 random bits
/// (`d-20261126T120000123Z-1a2b3c4d`).
pub fn deployment_id() -> String {
    deployment_id_at(SystemTime::now(), fastrand::u32(..))
}

/// The deployment id for `now` and `random`. Milliseconds keep ids (and the history files
/// named after them) in time order; the random bits keep two ids made in the same
/// millisecond (two servers, one pass) apart.
fn deployment_id_at(now: SystemTime, random: u32) -> String {
    let millis = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_millis());
    let stamp = Timestamp(now)
        .to_string()
        .replace(['-', ':'], "")
        .replace('Z', &format!("{millis:03}Z"));
    format!("d-{stamp}-{random:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deployment_ids_carry_the_time_to_the_millisecond_and_eight_hex_digits() {
        let at = Timestamp::parse("2026-11-26T12:00:00Z").unwrap().0 + Duration::from_millis(123);
        assert_eq!(deployment_id_at(at, 0x1a2b_3c4d), "d-20261126T120000123Z-1a2b3c4d");
        assert_eq!(deployment_id_at(UNIX_EPOCH, 7), "d-19700101T000000000Z-00000007");
    }

    #[test]
    fn deployment_ids_made_one_after_another_differ_and_keep_the_shape() {
        let (a, b) = (deployment_id(), deployment_id());
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), "d-20261126T120000123Z-1a2b3c4d".len(), "{id}");
            assert!(id.starts_with("d-") && id.as_bytes()[10] == b'T', "{id}");
            let random = id.rsplit('-').next().unwrap();
            assert!(
                random.len() == 8 && random.bytes().all(|c| c.is_ascii_hexdigit()),
                "{id}"
            );
        }
    }
}
