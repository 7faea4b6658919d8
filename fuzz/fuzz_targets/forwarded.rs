//! cargo-fuzz target `forwarded`: see `pa_auth::fuzz_checks::check_forwarded` for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pa_auth::fuzz_checks::check_forwarded(data);
});
