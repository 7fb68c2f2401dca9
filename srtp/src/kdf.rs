//! SRTP key derivation (RFC 3711 §4.3) with the AES-CM PRF (§4.3.3), key derivation rate 0.
//!
//! ```text
//!   key_id = label || r          (r = index DIV kdr = 0 when kdr is 0)
//!   x      = key_id XOR master_salt   (key_id right-aligned in the 112-bit salt)
//!   out    = AES-CM(master_key, IV = x * 2^16), as many bytes as needed
//! ```
//!
//! The 96-bit GCM master salt (RFC 7714 §12) is padded with 16 zero bits to 112 bits, as
//! libsrtp does.

use crate::cipher::{AesKey, Block};

/// Labels of RFC 3711 §4.3.2.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub(crate) enum Label {
    RtpEncryption = 0x00,
    RtpAuthentication = 0x01,
    RtpSalt = 0x02,
    RtcpEncryption = 0x03,
    RtcpAuthentication = 0x04,
    RtcpSalt = 0x05,
}

/// Fills `out` with the session key material for `label`.
pub(crate) fn derive(master: &AesKey, master_salt: &[u8], label: Label, out: &mut [u8]) {
    let mut x = [0u8; 16];
    x[..master_salt.len()].copy_from_slice(master_salt);
    // key_id is 56 bits (label || 48-bit r = 0), right-aligned in the 112-bit salt: the label
    // lands on byte 7.
    x[7] ^= label as u8;
    for (counter, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = Block::from(x);
        block[14..16].copy_from_slice(&u16::try_from(counter).expect("short output").to_be_bytes());
        master.encrypt_block(&mut block);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::{derive, Label};
    use crate::cipher::AesKey;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 Appendix B.3: key derivation test vectors.
    #[test]
    fn rfc3711_b3_session_keys() {
        let master = AesKey::new(&unhex("E1F97A0D3E018BE0D64FA32C06DE4139"));
        let salt = unhex("0EC675AD498AFEEBB6960B3AABE6");
        let mut enc = [0u8; 16];
        derive(&master, &salt, Label::RtpEncryption, &mut enc);
        assert_eq!(enc.to_vec(), unhex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt_out = [0u8; 14];
        derive(&master, &salt, Label::RtpSalt, &mut salt_out);
        assert_eq!(salt_out.to_vec(), unhex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 94];
        derive(&master, &salt, Label::RtpAuthentication, &mut auth);
        assert_eq!(
            auth.to_vec(),
            unhex(
                "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
            )
        );
    }

    /// RFC 6188 §7.2 (AES-256 PRF) key derivation vectors.
    #[test]
    fn rfc6188_aes256_session_keys() {
        let master = AesKey::new(&unhex(
            "f0f04914b513f2763a1b1fa130f10e29 98f6f6e43e4309d1e622a0e332b9f1b6",
        ));
        let salt = unhex("3b04803de51ee7c96423ab5b78d2");
        let mut enc = [0u8; 32];
        derive(&master, &salt, Label::RtpEncryption, &mut enc);
        assert_eq!(
            enc.to_vec(),
            unhex("5ba1064e30ec51613cad926c5a28ef73 1ec7fb397f70a960653caf06554cd8c4")
        );
        let mut salt_out = [0u8; 14];
        derive(&master, &salt, Label::RtpSalt, &mut salt_out);
        assert_eq!(salt_out.to_vec(), unhex("fa31791685ca444a9e07c6c64e93"));
        let mut auth = [0u8; 20];
        derive(&master, &salt, Label::RtpAuthentication, &mut auth);
        assert_eq!(
            auth.to_vec(),
            unhex("fd9c32d39ed5fbb5a9dc96b30818454d1313dc05")
        );
    }
}
