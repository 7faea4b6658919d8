//! cargo-fuzz target `routing`: see `pa_auth::fuzz_checks::check_routing` for the property.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pa_auth::fuzz_checks::check_routing(data);
});
