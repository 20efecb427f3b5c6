//! The reply to a request that carried a `chunk` option: the msgpack map `{"ack": chunk}`.

/// Appends the ack reply for `chunk` to `out`.
pub fn write_ack(chunk: &[u8], out: &mut Vec<u8>) {
    // The chunk is echoed back as a msgpack string, as fluentd and fluent-bit do; clients
    // compare it byte for byte.
    rmp::encode::write_map_len(out, 1).expect("writing to a Vec cannot fail");
    rmp::encode::write_str(out, "ack").expect("writing to a Vec cannot fail");
    rmp::encode::write_str_len(out, chunk.len() as u32).expect("writing to a Vec cannot fail");
    out.extend_from_slice(chunk);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_is_a_map_with_the_chunk() {
        let mut out = Vec::new();
        write_ack(b"cD0xMjM0NTY3ODkwYWJjZA==", &mut out);
        let decoded: std::collections::HashMap<String, String> =
            rmp_serde::from_slice(&out).expect("valid msgpack map");
        assert_eq!(decoded["ack"], "cD0xMjM0NTY3ODkwYWJjZA==");
    }
}
