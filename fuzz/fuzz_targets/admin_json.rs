//! cargo-fuzz target `admin_json`: see `pa_auth::fuzz_checks::check_admin_json` for the properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pa_auth::fuzz_checks::check_admin_json(data);
});
