//! LZ4 frames as Kafka writes them into a batch (compression type 3): frame header, blocks of at
//! most 64 KiB compressed independently of each other, end mark; no checksums inside the frame
//! (the batch's CRC-32C covers it) and no content size.
//!
//! Frames are written here rather than with `lz4_flex::frame::FrameEncoder`: the encoder copies
//! every input byte into its own block buffer first and allocates its buffers per frame, which
//! cost more than the framing itself. Blocks are compressed straight from the batch's records.
//! Reading uses lz4_flex's frame decoder, which checks every field.

use std::cell::RefCell;

/// Largest block: the frame header's BD byte says 64 KiB.
const BLOCK_SIZE: usize = 64 * 1024;

/// Magic number (LE), FLG (version 01, independent blocks, no block checksums, no content size,
/// no content checksum, no dictionary), BD (64 KiB blocks), and the header checksum (the second
/// byte of XXH32 of FLG and BD with seed 0; a test checks it against lz4_flex's).
pub(super) const FRAME_HEADER: [u8; 7] = [0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82];

/// Set in a block's size when the block is stored uncompressed (it did not shrink).
const UNCOMPRESSED_FLAG: u32 = 0x8000_0000;

thread_local! {
    /// Where a block is compressed before it is appended: sized once for the largest block.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Appends `plain` to `out` as one LZ4 frame.
pub(super) fn put_frame(plain: &[u8], out: &mut Vec<u8>) {
    out.reserve(FRAME_HEADER.len() + plain.len() / 4 + 64);
    out.extend_from_slice(&FRAME_HEADER);
    SCRATCH.with_borrow_mut(|scratch| {
        let max = lz4_flex::block::get_maximum_output_size(BLOCK_SIZE);
        if scratch.len() < max {
            scratch.resize(max, 0);
        }
        for block in plain.chunks(BLOCK_SIZE) {
            let compressed = lz4_flex::block::compress_into(block, scratch)
                .expect("the scratch buffer holds the largest compressed block");
            if compressed < block.len() {
                out.extend_from_slice(&(compressed as u32).to_le_bytes());
                out.extend_from_slice(&scratch[..compressed]);
            } else {
                out.extend_from_slice(&(block.len() as u32 | UNCOMPRESSED_FLAG).to_le_bytes());
                out.extend_from_slice(block);
            }
        }
    });
    out.extend_from_slice(&0u32.to_le_bytes()); // end mark
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn decode(frame: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        lz4_flex::frame::FrameDecoder::new(frame)
            .read_to_end(&mut plain)
            .expect("a valid frame");
        plain
    }

    #[test]
    fn the_header_is_the_one_lz4_flex_writes_for_these_settings() {
        let info = lz4_flex::frame::FrameInfo::new()
            .block_size(lz4_flex::frame::BlockSize::Max64KB)
            .block_mode(lz4_flex::frame::BlockMode::Independent);
        let mut theirs = Vec::new();
        let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, &mut theirs);
        encoder.write_all(b"x").unwrap();
        encoder.finish().unwrap();
        assert_eq!(theirs[..FRAME_HEADER.len()], FRAME_HEADER);
    }

    #[test]
    fn frames_decode_to_their_input_whatever_its_size_and_content() {
        let repetitive: Vec<u8> = b"{\"id\":1,\"note\":\"same\"}".repeat(20_000);
        let mut noise = Vec::with_capacity(300_000);
        let mut x: u32 = 1;
        for _ in 0..300_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            noise.push((x >> 24) as u8);
        }
        let cases: [&[u8]; 6] = [
            b"",
            b"a",
            &repetitive[..BLOCK_SIZE],
            &repetitive[..BLOCK_SIZE + 1],
            &repetitive,
            &noise,
        ];
        for plain in cases {
            let mut out = b"prefix".to_vec();
            put_frame(plain, &mut out);
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(decode(&out[6..]), plain, "{} bytes", plain.len());
        }
        // Random bytes do not shrink: their blocks are stored as they are.
        let mut out = Vec::new();
        put_frame(&noise, &mut out);
        let first_block = u32::from_le_bytes(out[7..11].try_into().unwrap());
        assert_eq!(first_block, BLOCK_SIZE as u32 | UNCOMPRESSED_FLAG);
        let mut short = Vec::new();
        put_frame(&repetitive, &mut short);
        assert!(short.len() < repetitive.len() / 10, "{} bytes", short.len());
    }
}
