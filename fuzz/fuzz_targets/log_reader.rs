//! Arbitrary bytes as record batches and as a segment file being recovered: must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_log::fuzzing::decode_batches(data);
    sluice_log::fuzzing::recover_segment(data);
});
