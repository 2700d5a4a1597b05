//! The detection-rule SQL compiler and the query compiler on arbitrary
//! text: a compile error is fine, a panic is not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sentineld_agent::rules::{compile_query, compile_rule};

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let _ = compile_rule(sql);
    let _ = compile_query(sql);
});
