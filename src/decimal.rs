//! Unsigned integers in decimal without `core::fmt`: the access line and JSON Patch pointers
//! write some on every request, where `write!` spends ~100 instructions of formatter machinery.

/// The decimal digits of `n`, as `Display` writes them, in the tail of `buf`.
pub fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        // n % 10 < 10: one ASCII digit.
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[start..]
}

#[cfg(test)]
mod tests {
    #[test]
    fn digits_are_displays() {
        for n in [0, 7, 9, 10, 99, 100, 12_345, u64::MAX] {
            let mut buf = [0; 20];
            assert_eq!(super::digits(n, &mut buf), n.to_string().as_bytes());
        }
    }
}
