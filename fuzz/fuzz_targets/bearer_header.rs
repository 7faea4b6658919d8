//! cargo-fuzz target `bearer_header`: see `pa_auth::fuzz_checks::check_bearer_header` for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pa_auth::fuzz_checks::check_bearer_header(data);
});
