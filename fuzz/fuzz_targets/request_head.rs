//! cargo-fuzz target `request_head`: see `pa_auth::fuzz_checks::check_request_head` for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pa_auth::fuzz_checks::check_request_head(data);
});
