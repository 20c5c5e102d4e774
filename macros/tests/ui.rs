//! Compile-time behaviour of the macros: what compiles, and the errors for what
//! does not (`tests/ui/<macro>/{pass,fail}`). The `.stderr` files depend on the
//! pinned toolchain; regenerate them with `TRYBUILD=overwrite` and review them.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    for category in ["subscriber", "remote", "service", "event"] {
        cases.pass(format!("tests/ui/{category}/pass/*.rs"));
        cases.compile_fail(format!("tests/ui/{category}/fail/*.rs"));
    }
}
