//! AES with a 128- or 256-bit key behind one type, from RustCrypto's `aes` crate.
//!
//! `aes` 0.9 picks AES-NI, VAES-256 or VAES-512 at run time; its wide paths only engage for
//! runs of whole parallel batches (64 blocks with VAES-512), which is why the engine generates
//! keystream for many blocks, and many packets, per call.

use aes::{
    cipher::{BlockCipherEncrypt, KeyInit},
    Aes128, Aes256,
};

/// One AES block.
pub(crate) type Block = aes::Block;

/// An expanded AES key (the key schedule is computed once, at construction).
#[derive(Clone)]
pub(crate) enum AesKey {
    Aes128(Aes128),
    Aes256(Aes256),
}

impl AesKey {
    /// Expands a 16- or 32-byte key.
    ///
    /// # Panics
    /// On any other length; callers pass lengths fixed by the suite.
    pub(crate) fn new(key: &[u8]) -> Self {
        match key.len() {
            16 => Self::Aes128(Aes128::new_from_slice(key).expect("16-byte key")),
            32 => Self::Aes256(Aes256::new_from_slice(key).expect("32-byte key")),
            n => panic!("AES key of {n} bytes"),
        }
    }

    /// Encrypts blocks in place.
    #[inline]
    pub(crate) fn encrypt_blocks(&self, blocks: &mut [Block]) {
        match self {
            Self::Aes128(c) => c.encrypt_blocks(blocks),
            Self::Aes256(c) => c.encrypt_blocks(blocks),
        }
    }

    /// Encrypts one block in place.
    #[inline]
    pub(crate) fn encrypt_block(&self, block: &mut Block) {
        match self {
            Self::Aes128(c) => c.encrypt_block(block),
            Self::Aes256(c) => c.encrypt_block(block),
        }
    }
}
