//! Payment references: `PAY-<unix millis>-<10 upper-case base36 characters>`.

const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

pub fn new_reference() -> String {
    let millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    // Bytes of 252 and above are dropped so that every character is equally likely (252 = 7 × 36).
    let mut suffix = String::with_capacity(10);
    while suffix.len() < 10 {
        for b in rand::random::<[u8; 16]>() {
            if b < 252 && suffix.len() < 10 {
                suffix.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    format!("PAY-{millis}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_has_the_documented_shape() {
        let r = new_reference();
        let parts: Vec<&str> = r.split('-').collect();
        assert_eq!(parts.len(), 3, "{r}");
        assert_eq!(parts[0], "PAY");
        assert!(parts[1].parse::<u64>().unwrap() > 1_700_000_000_000);
        assert_eq!(parts[2].len(), 10);
        assert!(parts[2].bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(new_reference(), r);
    }
}
