//! cargo-fuzz target `token_format`: see `pa_auth::fuzz_checks::check_token_format` for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pa_auth::fuzz_checks::check_token_format(data);
});
